-- put_rule.lua: create or replace an auto-approval rule, with the cap on
-- the number of rules checked in the same step. Rules are global, like
-- roles: one hash, no bucket tag (on a cluster it lives in its own slot).
--
-- Fields of the rules hash: `r:<name>` the rule's JSON, `u:<name>` its use
-- count, `#order` the names in evaluation order joined by ',' (rule names
-- are [A-Za-z0-9._:-], so neither ',' nor a '#' first byte can occur in
-- one), `#version` a counter of list changes.
--
-- KEYS[1] rules hash
-- ARGV[1] rule name  ARGV[2] rule JSON  ARGV[3] most rules allowed
-- ARGV[4] events channel (publishes `rules:<new version>`)
--
-- Reply: created, replaced or full (nothing changed).
local field = 'r:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[1], field) == 1 then
  redis.call('HSET', KEYS[1], field, ARGV[2])
  redis.call('PUBLISH', ARGV[4], 'rules:' .. redis.call('HINCRBY', KEYS[1], '#version', 1))
  return 'replaced'
end
local order = redis.call('HGET', KEYS[1], '#order') or ''
local count = 0
for _ in string.gmatch(order, '[^,]+') do
  count = count + 1
end
if count >= tonumber(ARGV[3]) then
  return 'full'
end
if order == '' then
  order = ARGV[1]
else
  order = order .. ',' .. ARGV[1]
end
redis.call('HSET', KEYS[1], field, ARGV[2], '#order', order)
redis.call('HDEL', KEYS[1], 'u:' .. ARGV[1])
redis.call('PUBLISH', ARGV[4], 'rules:' .. redis.call('HINCRBY', KEYS[1], '#version', 1))
return 'created'
