-- register.lua: steps 3 to 5 of the decision order for one poll, atomically
-- (mirrors `registry::decision::decide` and `EmbeddedStore::register_sync`).
--
-- KEYS[1] request hash   {t}:r:<username>
-- KEYS[2] user           {t}:u:<username>
-- KEYS[3] pending index  {t}:pending   (ZSET, score 0, ordered by username)
-- KEYS[4] pending expiry {t}:pexp      (ZSET, score = expiry ms)
-- KEYS[5] granted index  {t}:granted
-- KEYS[6] granted expiry {t}:gexp
-- KEYS[7] lock copy      {t}:lock      (<version>:<unlocked_until ms>; missing = locked)
-- KEYS[8] denied index   {t}:denied
-- KEYS[9] denied expiry  {t}:dexp
-- KEYS[10] (mode 'counted' only) the global --max-pending counter; only on a
--         single Redis, where a script may touch keys of any slot
-- ARGV[1] username  ARGV[2] fingerprint (hex)  ARGV[3] now
-- ARGV[4] pending_ttl ms  ARGV[5] collect_window ms  ARGV[6] deny_window ms
-- ARGV[7] mode: 'decide' (may not create: answers need_slot instead),
--         'create' (a --max-pending slot is reserved: create if still decided),
--         or 'counted' (single Redis: take the slot from KEYS[10] here, so a
--         creating poll is one round trip; answers 'full' at the cap)
-- ARGV[8] bucket tag `{t}`  ARGV[9] source address or ''
-- ARGV[10] '1' when a whileLocked rule preauthorized the device (step 5
--         creates even while locked), else '0'
-- ARGV[11..] field, value pairs of a new record (transport, sealed, ...);
--         in mode 'counted', ARGV[11] is max_pending and the pairs follow
--
-- Reply: {decision, swept, [record field, value ...]} where decision is one
-- of collect, pending, pending_locked, conflict, denied, locked, need_slot,
-- create; swept counts pending requests that left the index (slots to give
-- back); the record follows only for collect.
local username, fp, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local ttl, collect, deny = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local mode, tag, source = ARGV[7], ARGV[8], ARGV[9]
local preauthorized = ARGV[10] == '1'

local r, live = read_request(KEYS[1], now, ttl, collect, deny)
local same = live and r.fp == fp

-- 3. The username belongs to an existing user: only the collection of the
-- very request that was granted succeeds.
if redis.call('EXISTS', KEYS[2]) == 1 then
  if same and r.state == 'granted' then
    return with_record({ 'collect', 0 }, KEYS[1])
  end
  return { 'conflict', 0 }
end

-- The bucket's copy of the lock state, `<version>:<unlocked_until ms>`.
local lock = redis.call('GET', KEYS[7])
local until_ms = lock and tonumber(string.match(lock, ':(%d+)$')) or 0
local unlocked = now < until_ms

-- 4. A request for this username is already known.
if live then
  if not same then
    return { 'conflict', 0 }
  end
  if r.state == 'granted' then
    return with_record({ 'collect', 0 }, KEYS[1])
  elseif r.state == 'denied' then
    return { 'denied', 0 }
  end
  -- Pending: refresh, whether locked or not (it can still be granted).
  if source ~= '' then
    redis.call('HSET', KEYS[1], 'last', int(now), 'src', source)
  else
    redis.call('HSET', KEYS[1], 'last', int(now))
  end
  redis.call('HINCRBY', KEYS[1], 'polls', 1)
  expire_at(KEYS[1], now + ttl, now)
  redis.call('ZADD', KEYS[4], int(now + ttl), username)
  if unlocked then
    return { 'pending', 0 }
  end
  return { 'pending_locked', 0 }
end

-- 5. Nothing live is known.
if not unlocked and not preauthorized then
  return { 'locked', 0 }
end

-- Create. First forget this username's expired record and its index
-- entries (which outlive the hash when Redis dropped it by TTL), and a few
-- other expired pending requests of the bucket, so their slots can be reused.
local swept = redis.call('ZREM', KEYS[3], username)
redis.call('ZREM', KEYS[4], username)
redis.call('ZREM', KEYS[5], username)
redis.call('ZREM', KEYS[6], username)
redis.call('ZREM', KEYS[8], username)
redis.call('ZREM', KEYS[9], username)
if r then
  redis.call('DEL', KEYS[1])
end
swept = swept + sweep_pending(tag, KEYS[3], KEYS[4], now, 16)

local first_field = 11
if mode == 'counted' then
  first_field = 12
  local count = tonumber(redis.call('GET', KEYS[10]) or '0') - swept
  if count < 0 then
    count = 0
  end
  if count + 1 > tonumber(ARGV[11]) then
    redis.call('SET', KEYS[10], int(count))
    return { 'full', 0 }
  end
  redis.call('SET', KEYS[10], int(count + 1))
  -- The swept slots went back to the counter just now.
  swept = 0
elseif mode ~= 'create' then
  return { 'need_slot', swept }
end

local fields = { 'state', 'pending', 'fp', fp, 'first', int(now), 'last', int(now), 'polls', '1' }
if source ~= '' then
  fields[#fields + 1] = 'src'
  fields[#fields + 1] = source
end
for i = first_field, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('HSET', KEYS[1], unpack(fields))
expire_at(KEYS[1], now + ttl, now)
redis.call('ZADD', KEYS[3], 0, username)
redis.call('ZADD', KEYS[4], int(now + ttl), username)
return { 'create', swept }
