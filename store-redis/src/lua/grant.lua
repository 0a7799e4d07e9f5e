-- grant.lua: commit a grant atomically (mirrors `EmbeddedStore::commit_grant`):
-- create the user and turn the pending request into a granted one, or change
-- nothing. Two grants at once create one user: the second one sees the
-- request granted and answers `already`.
--
-- KEYS[1] request hash  KEYS[2] user  KEYS[3] pending index
-- KEYS[4] pending expiry  KEYS[5] granted index  KEYS[6] granted expiry
-- KEYS[7] users index  KEYS[8] the bucket's webhook outbox
-- ARGV[1] username  ARGV[2] fingerprint the admin saw (hex)  ARGV[3] now
-- ARGV[4] pending_ttl ms  ARGV[5] collect_window ms  ARGV[6] deny_window ms
-- ARGV[7] granted_at  ARGV[8] user JSON  ARGV[9] granted roles JSON
-- ARGV[10] granted permissions JSON  ARGV[11] events channel
-- ARGV[12] the issued client certificate (PEM), or '' for a password request
-- ARGV[13] the name of the rule that granted, or '' for an admin's grant
-- ARGV[14] outbox cap (0: no webhooks)  ARGV[15] the `request.granted`
-- event's id  ARGV[16] the `rule.matched` event's id
--
-- Reply: {outcome, swept, [record ...]}: granted (record follows; swept is 1,
-- the slot to give back), already (record follows), not_found,
-- other_granted, user_exists, changed, denied.
local username, fp, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl, collect, deny = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local granted_at = tonumber(ARGV[7])

local r, live = read_request(KEYS[1], now, ttl, collect, deny)
if live and r.state == 'granted' then
  if r.fp == fp then
    return with_record({ 'already', 0 }, KEYS[1])
  end
  return { 'other_granted', 0 }
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return { 'user_exists', 0 }
end
if not live then
  return { 'not_found', 0 }
end
if r.fp ~= fp then
  return { 'changed', 0 }
end
if r.state ~= 'pending' then
  return { 'denied', 0 }
end

local swept = redis.call('ZREM', KEYS[3], username)
redis.call('ZREM', KEYS[4], username)
redis.call('HSET', KEYS[1], 'state', 'granted', 'at', int(granted_at), 'roles', ARGV[9], 'perms', ARGV[10])
if ARGV[12] ~= nil and ARGV[12] ~= '' then
  redis.call('HSET', KEYS[1], 'cert', ARGV[12])
end
if ARGV[13] ~= nil and ARGV[13] ~= '' then
  redis.call('HSET', KEYS[1], 'by', ARGV[13])
end
redis.call('HDEL', KEYS[1], 'sealed')
local reply = with_record({ 'granted', swept }, KEYS[1])
local expires = granted_at + collect
expire_at(KEYS[1], expires, now)
redis.call('ZADD', KEYS[5], 0, username)
redis.call('ZADD', KEYS[6], int(expires), username)
redis.call('SET', KEYS[2], ARGV[8])
redis.call('ZADD', KEYS[7], 0, username)
bump_epoch(KEYS[1])
outbox_request(KEYS[8], tonumber(ARGV[14]) or 0, KEYS[1], username, 'request.granted',
  ARGV[15], ARGV[16], ARGV[13], 'grant', granted_at)
redis.call('PUBLISH', ARGV[11], 'grant:' .. username)
return reply
