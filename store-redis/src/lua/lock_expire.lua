-- lock_expire.lua: record, once, that the unlock window closed by itself.
--
-- When the global lock key holds a window that ended at or before `now`,
-- writes the locked state under the same version (the bucket copies keep
-- their expired window, which reads the same, and `repair_lock_copies`
-- leaves them alone) and appends `registry.locked` to the lock's outbox.
-- Every instance's sweep calls it; the first one records the event, the
-- others find the key already locked. An admin's later `set_lock_state`
-- takes a higher version as always.
--
-- KEYS[1] the global lock key  KEYS[2] the lock's webhook outbox
-- ARGV[1] now  ARGV[2] outbox cap  ARGV[3] the event's id
-- Reply: 1 if the end of a window was recorded, else 0.
local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
local version, ends = string.match(current, '^(%d+):(%d+)$')
ends = tonumber(ends)
if not ends or ends == 0 or ends > tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], version .. ':0')
outbox_add(KEYS[2], tonumber(ARGV[2]) or 0, { 'id', ARGV[3], 'type', 'registry.locked',
  'at', int(ends), 'lock', 'expired' })
return 1
