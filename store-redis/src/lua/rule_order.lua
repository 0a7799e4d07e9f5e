-- rule_order.lua: set the rules' evaluation order, only if the names given
-- are exactly the defined rules, each once.
--
-- KEYS[1] rules hash (fields: see put_rule.lua)
-- ARGV[1] the names in the new order, joined by ','
-- ARGV[2] events channel (publishes `rules:<new version>`)
--
-- Reply: applied, or mismatch (nothing changed).
local current = {}
local count = 0
for name in string.gmatch(redis.call('HGET', KEYS[1], '#order') or '', '[^,]+') do
  current[name] = true
  count = count + 1
end
local seen = {}
local given = 0
for name in string.gmatch(ARGV[1], '[^,]+') do
  if not current[name] or seen[name] then
    return 'mismatch'
  end
  seen[name] = true
  given = given + 1
end
if given ~= count then
  return 'mismatch'
end
redis.call('HSET', KEYS[1], '#order', ARGV[1])
redis.call('PUBLISH', ARGV[2], 'rules:' .. redis.call('HINCRBY', KEYS[1], '#version', 1))
return 'applied'
