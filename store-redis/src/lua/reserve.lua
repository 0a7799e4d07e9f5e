-- reserve.lua: take one slot under --max-pending, after giving back
-- ARGV[2] slots freed by a sweep. The counter is the only key.
--
-- KEYS[1] counter  ARGV[1] max_pending  ARGV[2] slots to give back first
-- Reply: the count after reserving, or -1 when the cap is reached.
local count = tonumber(redis.call('GET', KEYS[1]) or '0') - tonumber(ARGV[2])
if count < 0 then
  count = 0
end
if count + 1 > tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], int(count))
  return -1
end
redis.call('SET', KEYS[1], int(count + 1))
return count + 1
