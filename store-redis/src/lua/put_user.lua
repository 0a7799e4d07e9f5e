-- put_user.lua: create or replace a user, and index it for the listing.
--
-- KEYS[1] user  KEYS[2] users index
-- ARGV[1] username  ARGV[2] user JSON  ARGV[3] events channel
redis.call('SET', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
bump_epoch(KEYS[1])
redis.call('PUBLISH', ARGV[3], 'user:' .. ARGV[1])
return 1
