-- sweep.lua: drop one bucket's expired pending, granted and denied requests
-- with their index entries, at most ARGV[3] of each per call.
--
-- KEYS[1] pending index  KEYS[2] pending expiry  KEYS[3] granted index
-- KEYS[4] granted expiry  KEYS[5] denied index  KEYS[6] denied expiry
-- ARGV[1] bucket tag  ARGV[2] now  ARGV[3] max per kind
--
-- Reply: {pending swept, granted swept, denied swept}.
local tag, now, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
return {
  sweep_pending(tag, KEYS[1], KEYS[2], now, max),
  sweep_granted(tag, KEYS[3], KEYS[4], now, max),
  sweep_denied(tag, KEYS[5], KEYS[6], now, max),
}
