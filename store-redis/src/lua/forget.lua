-- forget.lua: drop a live pending or denied request, so the username is free
-- at once (mirrors `EmbeddedStore::forget_request`). A granted request is
-- left alone: the admin deletes the user instead.
--
-- KEYS[1] request hash  KEYS[2] pending index  KEYS[3] pending expiry
-- KEYS[4] denied index  KEYS[5] denied expiry  KEYS[6] the bucket's webhook outbox
-- ARGV[1] username  ARGV[2] now  ARGV[3] pending_ttl ms
-- ARGV[4] collect_window ms  ARGV[5] deny_window ms  ARGV[6] events channel
-- ARGV[7] unused ('')  ARGV[8] outbox cap (0: no webhooks)
-- ARGV[9] the `request.deleted` event's id
--
-- Reply: {outcome, swept}: forgotten (swept is 1 when a pending request left
-- the index: the slot to give back), not_found, granted.
local username, now = ARGV[1], tonumber(ARGV[2])
local ttl, collect, deny = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])

local r, live = read_request(KEYS[1], now, ttl, collect, deny)
if not live then
  return { 'not_found', 0 }
end
if r.state == 'granted' then
  return { 'granted', 0 }
end
outbox_request(KEYS[6], tonumber(ARGV[8]) or 0, KEYS[1], username, 'request.deleted',
  ARGV[9], '', '', '', now)
local swept = redis.call('ZREM', KEYS[2], username)
redis.call('ZREM', KEYS[3], username)
redis.call('ZREM', KEYS[4], username)
redis.call('ZREM', KEYS[5], username)
redis.call('DEL', KEYS[1])
bump_epoch(KEYS[1])
redis.call('PUBLISH', ARGV[6], 'forget:' .. username)
return { 'forgotten', swept }
