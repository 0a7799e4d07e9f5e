-- delete_rule.lua: delete a rule, its use count and its place in the order.
--
-- KEYS[1] rules hash (fields: see put_rule.lua)
-- ARGV[1] rule name  ARGV[2] events channel (publishes `rules:<new version>`)
--
-- Reply: 1 if the rule existed, else 0.
if redis.call('HDEL', KEYS[1], 'r:' .. ARGV[1]) == 0 then
  return 0
end
redis.call('HDEL', KEYS[1], 'u:' .. ARGV[1])
local kept = {}
for name in string.gmatch(redis.call('HGET', KEYS[1], '#order') or '', '[^,]+') do
  if name ~= ARGV[1] then
    kept[#kept + 1] = name
  end
end
redis.call('HSET', KEYS[1], '#order', table.concat(kept, ','))
redis.call('PUBLISH', ARGV[2], 'rules:' .. redis.call('HINCRBY', KEYS[1], '#version', 1))
return 1
