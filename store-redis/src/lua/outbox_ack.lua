-- outbox_ack.lua: retire delivered webhook events: acknowledge them in the
-- consumer group and delete them from the stream, in one step, so an entry
-- is never left acknowledged but still counted in the outbox.
--
-- KEYS[1] an outbox stream
-- ARGV[1] the consumer group  ARGV[2..] entry ids
-- Reply: the number of entries deleted.
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
if #ids == 0 then
  return 0
end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
return redis.call('XDEL', KEYS[1], unpack(ids))
