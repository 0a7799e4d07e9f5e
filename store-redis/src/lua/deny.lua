-- deny.lua: mark a pending request denied (mirrors `EmbeddedStore::deny`).
-- The denied record is answered 403 until the denial window closes, then
-- Redis drops it by TTL.
--
-- KEYS[1] request hash  KEYS[2] pending index  KEYS[3] pending expiry
-- KEYS[4] denied index  KEYS[5] denied expiry (the sweep drops the entry
--         when the window closes, as Redis drops the hash by TTL)
-- KEYS[6] the bucket's webhook outbox
-- ARGV[1] username  ARGV[2] now  ARGV[3] pending_ttl ms
-- ARGV[4] collect_window ms  ARGV[5] deny_window ms  ARGV[6] events channel
-- ARGV[7] the name of the rule that denies, or '' for an admin
-- ARGV[8] outbox cap (0: no webhooks)  ARGV[9] the `request.denied` event's
-- id  ARGV[10] the `rule.matched` event's id
--
-- Reply: {outcome, swept}: denied (swept is 1 when a pending request left the
-- index), not_found, already_granted.
local username, now = ARGV[1], tonumber(ARGV[2])
local ttl, collect, deny = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local r, live = read_request(KEYS[1], now, ttl, collect, deny)
if not live then
  return { 'not_found', 0 }
end
if r.state == 'granted' then
  return { 'already_granted', 0 }
end
if r.state == 'denied' then
  return { 'denied', 0 }
end
local swept = redis.call('ZREM', KEYS[2], username)
redis.call('ZREM', KEYS[3], username)
redis.call('HSET', KEYS[1], 'state', 'denied', 'at', int(now))
redis.call('HDEL', KEYS[1], 'sealed')
if ARGV[7] ~= nil and ARGV[7] ~= '' then
  redis.call('HSET', KEYS[1], 'by', ARGV[7])
end
expire_at(KEYS[1], now + deny, now)
redis.call('ZADD', KEYS[4], 0, username)
redis.call('ZADD', KEYS[5], int(now + deny), username)
bump_epoch(KEYS[1])
outbox_request(KEYS[6], tonumber(ARGV[8]) or 0, KEYS[1], username, 'request.denied',
  ARGV[9], ARGV[10], ARGV[7], 'deny', now)
redis.call('PUBLISH', ARGV[6], 'deny:' .. username)
return { 'denied', swept }
