-- put_role.lua: create or replace a role in the global roles hash, and
-- announce it. Roles are global (not per user), so this script's one key has
-- no bucket tag; on a cluster it lives in the slot of `<prefix>:roles`.
--
-- The hash's field `#epoch` (never a role name: names are [A-Za-z0-9._:-])
-- counts role changes, so a proxy that missed the event still sees the
-- change at its next epoch reading (cache.rs, `spawn_refresher`).
--
-- KEYS[1] roles hash
-- ARGV[1] role name  ARGV[2] role JSON  ARGV[3] events channel
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[1], '#epoch', 1)
redis.call('PUBLISH', ARGV[3], 'role:' .. ARGV[1])
return 1
