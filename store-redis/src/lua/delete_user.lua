-- delete_user.lua: delete a user and any granted request of theirs
-- (mirrors `EmbeddedStore::delete_user`; a pending or denied request stays).
--
-- KEYS[1] user  KEYS[2] users index  KEYS[3] request hash
-- KEYS[4] granted index  KEYS[5] granted expiry
-- ARGV[1] username  ARGV[2] events channel
--
-- Reply: 1 if the user existed, else 0.
local username = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], username)
if redis.call('HGET', KEYS[3], 'state') == 'granted' then
  redis.call('DEL', KEYS[3])
end
redis.call('ZREM', KEYS[4], username)
redis.call('ZREM', KEYS[5], username)
bump_epoch(KEYS[1])
redis.call('PUBLISH', ARGV[2], 'delete:' .. username)
return 1
