-- cas_user.lua: replace a user only if it is still exactly what the caller
-- read (compare-and-set on the stored JSON), and announce it. The caller
-- reads, changes and retries on 0, so no write of the same user can land
-- between its read and its write, and a deleted user is never re-created.
--
-- KEYS[1] user  KEYS[2] the bucket's webhook outbox
-- ARGV[1] username  ARGV[2] the JSON read  ARGV[3] new JSON  ARGV[4] events channel
-- ARGV[5] outbox cap (0: no webhooks)  ARGV[6] the `user.updated` event (JSON)
--
-- Reply: 1 written; 0 changed since it was read (read again); -1 no such user.
local current = redis.call('GET', KEYS[1])
if not current then
  return -1
end
if current ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3])
outbox_add(KEYS[2], tonumber(ARGV[5]) or 0, { 'e', ARGV[6] })
bump_epoch(KEYS[1])
redis.call('PUBLISH', ARGV[4], 'user:' .. ARGV[1])
return 1
