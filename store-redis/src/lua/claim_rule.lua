-- claim_rule.lua: count one decision of a rule if its stored maxUses allows
-- another. One script, so two instances claiming the last use at once get
-- one `claimed` and one `exhausted`: the budget is exact across instances.
--
-- KEYS[1] rules hash (fields: see put_rule.lua)
-- ARGV[1] rule name
--
-- Reply: {'claimed', uses after}, {'exhausted'} or {'gone'}.
local json = redis.call('HGET', KEYS[1], 'r:' .. ARGV[1])
if not json then
  return { 'gone' }
end
local max = cjson.decode(json)['maxUses']
local uses = tonumber(redis.call('HGET', KEYS[1], 'u:' .. ARGV[1]) or '0')
if type(max) == 'number' and uses >= max then
  return { 'exhausted' }
end
return { 'claimed', redis.call('HINCRBY', KEYS[1], 'u:' .. ARGV[1], 1) }
