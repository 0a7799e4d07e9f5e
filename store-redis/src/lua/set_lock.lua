-- set_lock.lua: write one copy of the lock state (the global key or one
-- bucket's copy) unless it already holds a newer version.
--
-- Every `set_lock_state` takes a new version from `<prefix>:lock-version`
-- (INCR) and writes `<version>:<unlocked_until ms>` to all 65 keys. Because a
-- copy only ever moves to a higher version, two admins setting the lock at
-- once converge on the later one in every bucket, and the sweeper can repair
-- copies that a failed call missed by writing the global value again.
--
-- KEYS[1] the lock key or a bucket's copy  KEYS[2] (the global key's write
-- only) the lock's webhook outbox, in the lock key's slot
-- ARGV[1] version  ARGV[2] unlocked_until ms (0 = locked)
-- ARGV[3] outbox cap (0: no webhooks)  ARGV[4] the lock event (JSON)
-- Reply: 1 if written, 0 if the key already held this or a newer version.
local current = redis.call('GET', KEYS[1])
local version = 0
if current then
  version = tonumber(string.match(current, '^(%d+):')) or 0
end
if tonumber(ARGV[1]) > version then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
  if KEYS[2] ~= nil then
    outbox_add(KEYS[2], tonumber(ARGV[3]) or 0, { 'e', ARGV[4] })
  end
  return 1
end
return 0
