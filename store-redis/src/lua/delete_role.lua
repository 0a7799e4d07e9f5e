-- delete_role.lua: delete a role from the global roles hash, and announce it
-- if it existed.
--
-- KEYS[1] roles hash
-- ARGV[1] role name  ARGV[2] events channel
--
-- Reply: 1 if the role existed, else 0.
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
-- Counts role changes (see put_role.lua).
redis.call('HINCRBY', KEYS[1], '#epoch', 1)
redis.call('PUBLISH', ARGV[2], 'role:' .. ARGV[1])
return 1
