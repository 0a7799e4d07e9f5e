-- prelude.lua: helpers prepended to every script of fleetgate's Redis store.
--
-- Every script touches the keys of exactly one bucket, all under the bucket's
-- hash tag `{<prefix>:bNN}`, so each script is valid on Redis Cluster. Keys
-- named in KEYS are the ones the script always touches; a sweep also builds
-- request keys of other usernames from the bucket's tag (same slot).
--
-- Time is never read from Redis: every script gets `now` (ms since the epoch)
-- from the caller, exactly as the embedded store gets it, so a request is
-- live or expired by the same rule (`Windows::is_live`) in both backends.

-- An integer as Redis wants it in a command argument or a hash field
-- (Lua 5.1 numbers are doubles; ms timestamps stay exact below 2^53).
local function int(x)
  return string.format('%d', x)
end

-- When a request in `state` stops counting (mirrors `Windows::expires_at`).
local function expiry_of(state, last, at, ttl, collect, deny)
  if state == 'pending' then
    return last + ttl
  elseif state == 'granted' then
    return at + collect
  else
    return at + deny
  end
end

-- The request at `key` as {state, fp, last, at, expires}, or nil; and whether
-- it is live at `now`.
local function read_request(key, now, ttl, collect, deny)
  local f = redis.call('HMGET', key, 'state', 'fp', 'last', 'at')
  if not f[1] then
    return nil, false
  end
  local r = { state = f[1], fp = f[2], last = tonumber(f[3]) or 0, at = tonumber(f[4]) or 0 }
  r.expires = expiry_of(r.state, r.last, r.at, ttl, collect, deny)
  return r, now < r.expires
end

-- Bumps the change epoch of the bucket that `key` belongs to
-- (`{<prefix>:bNN}:epoch`, in the same slot). Every transition that publishes
-- a per-user event bumps it in the same script, so a proxy that lost the event
-- still sees the change when it re-reads the 64 epochs (see `cache.rs`).
local function bump_epoch(key)
  redis.call('INCR', string.match(key, '^{[^}]*}') .. ':epoch')
end

-- Sets the key's Redis TTL so that it disappears when it stops counting.
-- Redis frees the memory; correctness never depends on it, because every
-- read checks `expires` against the caller's clock.
local function expire_at(key, expires, now)
  local left = expires - now
  if left < 1 then
    left = 1
  end
  redis.call('PEXPIRE', key, int(left))
end

-- Drops up to `max` pending requests of this bucket whose expiry has passed,
-- with their index entries. Returns how many left the pending index (the
-- caller gives that many slots back to the `--max-pending` counter).
local function sweep_pending(tag, pending, pexp, now, max)
  local names = redis.call('ZRANGEBYSCORE', pexp, '-inf', int(now), 'LIMIT', 0, max)
  local swept = 0
  for _, name in ipairs(names) do
    local key = tag .. ':r:' .. name
    if redis.call('HGET', key, 'state') == 'pending' then
      redis.call('DEL', key)
    end
    redis.call('ZREM', pexp, name)
    swept = swept + redis.call('ZREM', pending, name)
  end
  return swept
end

-- Drops up to `max` granted requests of this bucket whose collection window
-- has closed (the users stay). Returns how many.
local function sweep_granted(tag, granted, gexp, now, max)
  local names = redis.call('ZRANGEBYSCORE', gexp, '-inf', int(now), 'LIMIT', 0, max)
  for _, name in ipairs(names) do
    local key = tag .. ':r:' .. name
    if redis.call('HGET', key, 'state') == 'granted' then
      redis.call('DEL', key)
    end
    redis.call('ZREM', gexp, name)
    redis.call('ZREM', granted, name)
  end
  return #names
end

-- Drops up to `max` denied requests of this bucket whose deny window has
-- closed, with their index entries (Redis has usually dropped the hash by
-- TTL already; the index entries are what is left). Returns how many.
local function sweep_denied(tag, denied, dexp, now, max)
  local names = redis.call('ZRANGEBYSCORE', dexp, '-inf', int(now), 'LIMIT', 0, max)
  for _, name in ipairs(names) do
    local key = tag .. ':r:' .. name
    if redis.call('HGET', key, 'state') == 'denied' then
      redis.call('DEL', key)
    end
    redis.call('ZREM', dexp, name)
    redis.call('ZREM', denied, name)
  end
  return #names
end

-- A reply that carries the whole request hash after `head`.
local function with_record(head, key)
  local all = redis.call('HGETALL', key)
  for _, v in ipairs(all) do
    head[#head + 1] = v
  end
  return head
end

-- The webhook outbox (`store::outbox` in Rust): appends one event entry
-- (`fields`, a flat field/value list) to `stream` when `cap` > 0, in the
-- same script as the decision it describes. At the cap the oldest entries
-- are dropped first, and counted in `<stream>:dropped` (same slot).
local function outbox_add(stream, cap, fields)
  if cap <= 0 then
    return
  end
  if redis.call('XLEN', stream) >= cap then
    local dropped = redis.call('XTRIM', stream, 'MAXLEN', cap - 1)
    redis.call('INCRBY', stream .. ':dropped', dropped)
  end
  redis.call('XADD', stream, '*', unpack(fields))
end

-- The events of a request decision: `rule.matched` first when a rule
-- decided (`rule` not ''), then `kind`, each carrying the request hash as
-- it is now (`r.<field>`), without the sealed credential and the
-- certificate: Rust renders the request's admin view from it.
local function outbox_request(stream, cap, key, username, kind, id, rule_id, rule, action, at)
  if cap <= 0 then
    return
  end
  local rec = {}
  local all = redis.call('HGETALL', key)
  for i = 1, #all, 2 do
    if all[i] ~= 'sealed' and all[i] ~= 'cert' then
      rec[#rec + 1] = 'r.' .. all[i]
      rec[#rec + 1] = all[i + 1]
    end
  end
  local function entry(head)
    for _, v in ipairs(rec) do
      head[#head + 1] = v
    end
    return head
  end
  if rule ~= nil and rule ~= '' then
    outbox_add(stream, cap, entry({ 'id', rule_id, 'type', 'rule.matched', 'at', int(at),
      'user', username, 'rule', rule, 'action', action }))
  end
  outbox_add(stream, cap, entry({ 'id', id, 'type', kind, 'at', int(at), 'user', username }))
end
