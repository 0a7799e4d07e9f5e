-- release.lua: give ARGV[1] slots back to the --max-pending counter, never
-- going below zero.
--
-- KEYS[1] counter  ARGV[1] slots
-- Reply: the count afterwards.
local count = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[1])
if count < 0 then
  count = 0
end
redis.call('SET', KEYS[1], int(count))
return count
