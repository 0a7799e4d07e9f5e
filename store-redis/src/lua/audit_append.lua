-- audit_append: add audit records to the stream, in order, evicting the
-- oldest past the cap in the same call.
-- KEYS[1] = <prefix>:audit (a stream)
-- ARGV[1] = max records kept (exact MAXLEN)
-- ARGV[2k], ARGV[2k+1] = the entry's `at` (ms, decimal) and its JSON
-- Each id is `<ms>-<seq>`: ms is the entry's `at`, raised to the stream's
-- last generated id when a clock went back, and Redis picks the sequence,
-- so ids always grow and `since`/retention can use the id as a range
-- bound. The last generated id outlives trimming (XINFO), so an emptied
-- stream never hands out a smaller id.
-- Returns the ids, in order.
local key = KEYS[1]
local max = ARGV[1]
local last_ms = nil
if redis.call('EXISTS', key) == 1 then
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      last_ms = string.match(info[i + 1], '^(%d+)-')
    end
  end
end
-- Compares two decimal strings without going through Lua numbers.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local ids = {}
for i = 2, #ARGV, 2 do
  local ms = ARGV[i]
  if last_ms ~= nil and less(ms, last_ms) then
    ms = last_ms
  end
  local id = redis.call('XADD', key, 'MAXLEN', max, ms .. '-*', 'j', ARGV[i + 1])
  last_ms = ms
  ids[#ids + 1] = id
end
return ids
