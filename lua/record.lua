-- record.lua: insert completion events for ONE model, keep its running totals, and trim its
-- rolling window, in one atomic step.
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set; member = msgpack event (carries a unique id),
--                                  score = completed_at in epoch milliseconds
-- KEYS[2]  <ns>:{<model>}:limit   string; present while the model is subscription-limited
-- KEYS[3]  <ns>:{<model>}:totals  hash; the sums over every event in KEYS[1] (see FIELDS),
--                                  and `capped`
-- ARGV[1]  "window_ms limit_ttl_ms grace_ms max_events", space-separated integers:
--           the rolling window; how long a subscription-limit error blocks the model; how
--           far past the window the keys' TTLs reach; the cap on the model's stored events
--           (0: none; the oldest go)
-- ARGV[2]  "n oldest newest sum_1 .. sum_N", space-separated integers: the number of events
--           below, their oldest and newest scores, and their sums in FIELDS order, as if every
--           one gets stored (exact and non-negative; cost in nano-USD)
-- ARGV[3..2+2n] pairs (score, member), members distinct
-- ARGV[3+2n..]  triples (position, until_ms, limit_reason) for the events (1..n) whose error
--           is a subscription-limit error: when the block ends, in epoch ms (0: limit_ttl_ms
--           from now), and the text stored in the limit key
-- (Packing settings and sums into two arguments keeps a one-event call small; the common
-- batch, all new and in the window, goes to ZADD with its arguments as they are.)
--
-- Refuses (an error reply starting 'record.lua: totals overflow', nothing written) a call
-- whose sums would take a total past what HINCRBY holds (2^63 - 1, less a margin for the
-- doubles the check compares in).
--
-- Returns {stored, duplicates, outside_window, now_ms, capped, created}; capped counts the
-- oldest events removed to respect max_events (also added to the totals' `capped` field);
-- created is 1 when this call stored into an events key that held nothing (a new model, or
-- Redis lost its data: the client then lists the model in the registry again).
--
-- "now" is Redis's own clock (TIME), never a client's, so replicas with skewed clocks agree.
-- A member that is already present (same event id: a retried write) is not counted again.
-- The totals stay equal to the sums over the members of KEYS[1]: the batch's sums are added
-- less the events not stored, and every member trimmed here is subtracted. A field whose sum
-- is 0 may be absent.
--
-- FIELDS names the totals, in the order of ARGV[2]'s sums; ADDED_LATER, the ones added after
-- hashes were already written (see below). The loader renders both lines from the Python
-- schema (redis_telemetry/core/totals.py); the copies here are kept equal by a test.
local FIELDS = {'ok', 'failed', 'latency', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}
local ADDED_LATER = {}
local N = #FIELDS
local LIMIT = 2 ^ 52  -- doubles hold integers exactly below 2^53
local TRIM_EVERY = 4

-- A decoder for the one msgpack shape this package writes:
-- [1, event_id, session_id, completed_at_us, latency_ms, success,
--  total, input, output, reasoning, cache_read, cache_write, cost_usd, error]
local byte = string.byte

local function uint(s, pos, n)
  local v = 0
  for i = pos, pos + n - 1 do v = v * 256 + byte(s, i) end
  return v
end

local function read(s, pos)  -- returns value, next position; strings and nil are skipped
  local b = byte(s, pos)
  if b == nil then error('truncated') end
  if b <= 0x7f then return b, pos + 1 end
  if b >= 0xa0 and b <= 0xbf then return nil, pos + 1 + (b - 0xa0) end
  if b == 0xc0 then return nil, pos + 1 end
  if b == 0xc2 then return false, pos + 1 end
  if b == 0xc3 then return true, pos + 1 end
  if b == 0xcc then return uint(s, pos + 1, 1), pos + 2 end
  if b == 0xcd then return uint(s, pos + 1, 2), pos + 3 end
  if b == 0xce then return uint(s, pos + 1, 4), pos + 5 end
  if b == 0xcf then return uint(s, pos + 1, 8), pos + 9 end
  if b == 0xd9 then return nil, pos + 2 + uint(s, pos + 1, 1) end
  if b == 0xda then return nil, pos + 3 + uint(s, pos + 1, 2) end
  if b == 0xdb then return nil, pos + 5 + uint(s, pos + 1, 4) end
  if b >= 0xe0 then return b - 256, pos + 1 end
  if b >= 0xd0 and b <= 0xd3 then
    local n = 2 ^ (b - 0xd0)
    local v = uint(s, pos + 1, n)
    if v >= 2 ^ (8 * n - 1) then v = v - 2 ^ (8 * n) end
    return v, pos + 1 + n
  end
  if b == 0xcb then
    local hi, lo = uint(s, pos + 1, 4), uint(s, pos + 5, 4)
    local sign = hi >= 0x80000000 and -1 or 1
    local exp = math.floor(hi / 0x100000) % 0x800
    local frac = (hi % 0x100000) * 4294967296 + lo
    local v
    if exp == 0 then v = frac * 2 ^ -1074
    elseif exp == 0x7ff then error('not finite')
    else v = (1 + frac / 4503599627370496) * 2 ^ (exp - 1023) end
    return sign * v, pos + 9
  end
  error('unexpected msgpack type')
end

-- What one member adds to each total, by name (nil: not an event this package wrote).
local function named_contribution(member)
  if byte(member, 1) ~= 0x9e then error('not a 14-element array') end
  local v = {}
  local pos = 2
  for i = 1, 14 do v[i], pos = read(member, pos) end
  if v[1] ~= 1 or pos ~= #member + 1 then error('not a version-1 event') end
  for _, i in ipairs({5, 7, 8, 9, 10, 11, 12, 13}) do
    if type(v[i]) ~= 'number' then error('not a number') end
  end
  local success = v[6] == true
  return {
    ok = success and 1 or 0,
    failed = success and 0 or 1,
    latency = success and v[5] or 0,
    cost_nusd = math.floor(v[13] * 1e9 + 0.5),
    total = v[7], input = v[8], output = v[9], reasoning = v[10],
    cache_read = v[11], cache_write = v[12],
  }
end

-- The same in FIELDS order (nil: never counted). A field without a contribution is an error.
local function contribution(member)
  local ok, named = pcall(named_contribution, member)
  if not ok then return nil end
  local c = {}
  for i = 1, N do
    c[i] = named[FIELDS[i]]
    if c[i] == nil then error('record.lua: no contribution to the total ' .. FIELDS[i]) end
  end
  return c
end

-- Subtractions gather in `minus` and go to Redis before they could lose precision.
local minus = {}
for i = 1, N do minus[i] = 0 end

local function flush(i)
  if minus[i] ~= 0 then
    redis.call('HINCRBY', KEYS[3], FIELDS[i], string.format('-%.0f', minus[i]))
    minus[i] = 0
  end
end

local function subtract(member)
  local c = contribution(member)
  if not c then return end
  for i = 1, N do
    if minus[i] + c[i] >= LIMIT then flush(i) end
    minus[i] = minus[i] + c[i]
  end
end

local window, limit_ttl, grace, cap = string.match(ARGV[1], '^(%d+) (%d+) (%d+) (%d+)$')
local head = {string.match(ARGV[2], '^(%d+) (%-?%d+) (%-?%d+)' .. string.rep(' (%d+)', N) .. '$')}
local n = tonumber(head[1])
if not cap or #head ~= N + 3 or #ARGV < 2 + 2 * n or (#ARGV - 2 - 2 * n) % 3 ~= 0 then
  return redis.error_reply('record.lua: malformed arguments')
end
window, limit_ttl, grace, cap = tonumber(window), tonumber(limit_ttl), tonumber(grace),
  tonumber(cap)
local reasons, untils = {}, {}
for i = 3 + 2 * n, #ARGV, 3 do
  local position, ends = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if not position or not ends then
    return redis.error_reply('record.lua: malformed arguments')
  end
  reasons[position], untils[position] = ARGV[i + 2], ends
end

-- The totals must hold what this call may add: checked before anything is written.
local have = redis.call('HMGET', KEYS[3], unpack(FIELDS))
for i = 1, N do
  if (tonumber(have[i]) or 0) + tonumber(head[3 + i]) >= 2 ^ 63 - 2 ^ 12 then
    return redis.error_reply('record.lua: totals overflow: ' .. FIELDS[i] .. ' would pass 2^63')
  end
end

-- set_window() stamps the namespace's window into the totals (rewindow.lua): a writer with
-- another window has not seen the change and must not trim with its own, so it is refused.
local stamped = tonumber(redis.call('HGET', KEYS[3], 'window_ms'))
if stamped and stamped ~= window then
  return redis.error_reply(string.format(
    'record.lua: window mismatch: %s is kept with window_ms=%d, not %d', KEYS[1], stamped, window))
end

-- A hash written by an older release may lack a field added since (ADDED_LATER): it gets the
-- field's sum over the members stored, paged, before anything changes. From then on the
-- field is present (0 included), so this costs one HMGET on later writes.
if #ADDED_LATER > 0 then
  local have = redis.call('HMGET', KEYS[3], unpack(ADDED_LATER))
  local missing, sums = {}, {}
  for j, name in ipairs(ADDED_LATER) do
    if not have[j] then
      for i = 1, N do
        if FIELDS[i] == name then missing[#missing + 1] = i; sums[i] = 0 end
      end
    end
  end
  local card = #missing > 0 and redis.call('ZCARD', KEYS[1]) or 0
  for start = 0, card - 1, 1000 do
    for _, member in ipairs(redis.call('ZRANGE', KEYS[1], start, start + 999)) do
      local c = contribution(member)
      for _, i in ipairs(c and missing or {}) do
        if sums[i] + c[i] >= LIMIT then
          redis.call('HINCRBY', KEYS[3], FIELDS[i], string.format('%.0f', sums[i]))
          sums[i] = 0
        end
        sums[i] = sums[i] + c[i]
      end
    end
  end
  for _, i in ipairs(missing) do
    redis.call('HINCRBY', KEYS[3], FIELDS[i], string.format('%.0f', sums[i]))
  end
  if card > 0 and redis.call('PTTL', KEYS[3]) == -1 then  -- made here: lives as the events do
    local ttl = redis.call('PTTL', KEYS[1])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[3], ttl) end
  end
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - window

local stored, duplicates, outside = 0, 0, 0
local reason, block = nil, 0  -- the latest block end a stored event names, and its text
local function limited(j)
  local text = reasons[j]
  if not text then return end
  local ends = untils[j] > 0 and untils[j] or now + limit_ttl
  if ends >= block then block, reason = ends, text end
end
local newest = cutoff
if n == 1 then  -- the common single event: ZADD NX says whether it was already stored
  if tonumber(ARGV[3]) <= cutoff then
    outside = 1
  elseif redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[4]) == 1 then
    stored = 1
    limited(1)
    newest = tonumber(ARGV[3])
  else
    duplicates = 1
  end
  if stored == 0 then  -- nothing to add: the sums were this one event's
    for i = 1, N do head[3 + i] = '0' end
  end
elseif n > 1 then
  -- one ZMSCORE tells which are already stored (a retried write), one ZADD adds the rest
  local members = {}
  for j = 1, n do members[j] = ARGV[2 + 2 * j] end
  local existing = redis.call('ZMSCORE', KEYS[1], unpack(members))
  local clean = tonumber(head[2]) > cutoff
  for j = 1, n do
    if not clean then break end
    if existing[j] then clean = false end
  end
  if clean then  -- all new and in the window: the arguments are ZADD's, as they are
    redis.call('ZADD', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))
    stored = n
    newest = tonumber(head[3])
    for j = 1, n do limited(j) end
  else
    local add, seen = {}, {}
    for j = 1, n do
      local score, member = ARGV[1 + 2 * j], members[j]
      if tonumber(score) <= cutoff then
        outside = outside + 1
        subtract(member)
      elseif existing[j] or seen[member] then
        duplicates = duplicates + 1
        subtract(member)
      else
        seen[member] = true
        stored = stored + 1
        add[#add + 1] = score
        add[#add + 1] = member
        limited(j)
        if tonumber(score) > newest then newest = tonumber(score) end
      end
    end
    if #add > 0 then redis.call('ZADD', KEYS[1], unpack(add)) end
  end
end

-- Each new subscription-limit error extends the block to the end it names (else to
-- now + limit_ttl); a longer block already in place is kept. A key left without a TTL (set by
-- hand) gets one. An end already past blocks nothing.
if reason and block > now then
  local left = redis.call('PTTL', KEYS[2])
  if left == -1 or left < block - now then
    redis.call('SET', KEYS[2], reason, 'PX', block - now)
  end
end

-- Trimming: members at or before the cutoff leave, and their sums with them. Readers subtract
-- any aged member still present themselves, so a write trims only when it takes the count of
-- stored members to a multiple of TRIM_EVERY (and on every batch): a few aged members may wait
-- for a later write, and most single-event writes skip two Redis calls.
local capped, created = 0, 0
if stored > 0 then
  local card = redis.call('ZCARD', KEYS[1])
  if card == stored then created = 1 end
  if n > 1 or card % TRIM_EVERY == 0 or (cap > 0 and card > cap) then  -- aged go before the cap
    local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
    if #gone > 0 then
      for _, member in ipairs(gone) do subtract(member) end
      redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
      card = card - #gone
    end
  end
  if cap > 0 and card > cap then  -- a runaway writer: keep the newest `cap` events
    local excess = card - cap
    for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, excess - 1)) do subtract(member) end
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
    capped = excess
  end
end

if stored == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[3])  -- no events, so nothing to sum
  return {stored, duplicates, outside, now, capped, created}
end
-- One HINCRBY per field for what was added less what left, when that stays exact.
for i = 1, N do
  local plus = head[3 + i]  -- the sum added, as text
  if minus[i] == 0 then
    if plus ~= '0' then redis.call('HINCRBY', KEYS[3], FIELDS[i], plus) end
  elseif tonumber(plus) < LIMIT then
    local net = tonumber(plus) - minus[i]
    if net ~= 0 then redis.call('HINCRBY', KEYS[3], FIELDS[i], string.format('%.0f', net)) end
    minus[i] = 0
  else
    redis.call('HINCRBY', KEYS[3], FIELDS[i], plus)
    flush(i)
  end
end
if capped > 0 then redis.call('HINCRBY', KEYS[3], 'capped', capped) end
-- Both keys live until the newest event leaves the window: extended only when a new event
-- needs it, and then by `grace` more, so most writes skip the PEXPIREs.
if redis.call('PTTL', KEYS[3]) < newest - cutoff then
  local ttl = math.floor(newest - cutoff + grace)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end

return {stored, duplicates, outside, now, capped, created}
