-- list.lua: one bucket's share of a keyset-paginated listing of requests.
-- Read-only. Walks the bucket's lexicographic index from the cursor and
-- returns the first `want` usernames whose expiry (in the expiry ZSET) is
-- after `now`; expired entries not yet swept are skipped, not returned.
--
-- KEYS[1] index (pending, granted or denied)  KEYS[2] its expiry ZSET
-- ARGV[1] ZRANGEBYLEX min  ARGV[2] ZRANGEBYLEX max  ARGV[3] want  ARGV[4] now
local min, max, want, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
while #out < want do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], min, max, 'LIMIT', 0, want)
  for _, name in ipairs(batch) do
    local expires = tonumber(redis.call('ZSCORE', KEYS[2], name) or '0')
    if now < expires then
      out[#out + 1] = name
      if #out == want then
        break
      end
    end
  end
  if #batch < want then
    break
  end
  min = '(' .. batch[#batch]
end
return out
