-- delete_user.lua: delete a user and any granted request of theirs
-- (mirrors `EmbeddedStore::delete_user`; a pending or denied request stays).
--
-- KEYS[1] user  KEYS[2] users index  KEYS[3] request hash
-- KEYS[4] granted index  KEYS[5] granted expiry  KEYS[6] the bucket's webhook outbox
-- ARGV[1] username  ARGV[2] events channel  ARGV[3] outbox cap (0: no webhooks)
-- ARGV[4] the `user.deleted` event's id  ARGV[5] now
--
-- Reply: 1 if the user existed, else 0.
local username = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if (tonumber(ARGV[3]) or 0) > 0 then
  -- `user.deleted` carries the user as it was, without its password hash:
  -- a hash becomes '-', so the view still says the user had a password.
  -- The JSON is serde's (no spaces); a PHC string has no quote. No cjson
  -- round trip: it would turn the empty lists into objects.
  local user = string.gsub(redis.call('GET', KEYS[1]), '"password_hash":"[^"]*"', '"password_hash":"-"')
  outbox_add(KEYS[6], tonumber(ARGV[3]), { 'id', ARGV[4], 'type', 'user.deleted', 'at', ARGV[5],
    'user', username, 'u', user })
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
