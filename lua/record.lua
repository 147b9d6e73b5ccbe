-- record.lua: insert completion events for ONE model, keep its running totals, latency sketch
-- and session index, and trim its rolling window, in one atomic step of bounded work.
--
-- KEYS[1]  <ns>:{<model>}:events    sorted set; member = msgpack event (carries a unique id),
--                                    score = completed_at in epoch milliseconds
-- KEYS[2]  <ns>:{<model>}:limit     string; present while the model is subscription-limited
-- KEYS[3]  <ns>:{<model>}:totals    hash; the sums over every member of KEYS[1] (see FIELDS),
--                                    `capped`, `layout`, and `window_ms` (set_window's stamp)
-- KEYS[4]  <ns>:{<model>}:sessions  hash; for each session id, fields <id>:n (events), <id>:i
--                                    (input), <id>:o (output), <id>:t (total tokens) and <id>:c
--                                    (cost_nusd), summed over its members of KEYS[1]
-- KEYS[5]  <ns>:{<model>}:latency   string; the latency sketch: the successful completions of
--                                    KEYS[1] per latency bucket, a big-endian signed 32-bit
--                                    counter per bucket (BITFIELD i32 #<bucket>)
-- ARGV[1]  "window_ms limit_ttl_ms grace_ms max_events", space-separated integers:
--           the rolling window; how long a subscription-limit error blocks the model; how
--           far past the window the keys' TTLs reach; the cap on the model's stored events
--           (0: none; the oldest go)
-- ARGV[2]  "n oldest newest sum_1 .. sum_N nb ns", space-separated integers: the number of
--           events below, their oldest and newest scores, their sums in FIELDS order, as if
--           every one gets stored (exact and non-negative; cost in nano-USD), and how many
--           bucket pairs and session entries follow the events
-- ARGV[3..2+2n] pairs (score, member), members distinct
-- then nb pairs (bucket, count) and ns entries (session, events, input, output, total,
--           cost_nusd; each value below 2^52, a session may repeat): what the events add to
--           the sketch and the session index when every one is stored (else each stored
--           member is read instead)
-- then triples (position, until_ms, limit_reason) for the events (1..n) whose error
--           is a subscription-limit error: when the block ends, in epoch ms (0: limit_ttl_ms
--           from now), and the text stored in the limit key
-- (Packing settings and sums into two arguments keeps a one-event call small; the common
-- batch, all new and in the window, goes to ZADD with its arguments as they are.)
-- A call with n = 0 stores nothing and only does the upkeep below (trims, rebuild).
--
-- Refuses (an error reply starting 'record.lua: totals overflow', nothing written) a call
-- whose sums would take a total past what HINCRBY holds (2^63 - 1, less a margin for the
-- doubles the check compares in), and (an error reply starting 'record.lua: window mismatch')
-- a call whose window differs from the `window_ms` that set_window() stamped into the totals.
--
-- Returns {stored, duplicates, outside_window, now_ms, capped, created, pending}; capped
-- counts the oldest events removed to respect max_events (also added to the totals' `capped`
-- field); created is 1 when this call stored into an events key that held nothing (a new
-- model, or Redis lost its data: the client then lists the model in the registry again);
-- pending is 1 while upkeep is left for later calls (aged or excess members, or a rebuild).
--
-- "now" is Redis's own clock (TIME), never a client's, so replicas with skewed clocks agree.
-- A member that is already present (same event id: a retried write) is not counted again.
-- The totals, sketch and session index stay equal to the sums over the members of KEYS[1]:
-- the batch's sums are added less the events not stored, and every member trimmed here is
-- subtracted. A field whose sum is 0 may be absent.
--
-- Bounded work: one call removes at most STEP aged members and STEP members over the cap, and
-- rebuilds at most STEP members, so no call holds Redis for long whatever came before (a long
-- idle stretch, a restore, a lower cap). What is left waits for the next call; readers
-- subtract aged members themselves, so the numbers stay exact meanwhile.
--
-- Layout: a totals hash whose `layout` is not LAYOUT (written by an older release) is rebuilt
-- from the members, STEP per call, oldest first. While it is, field `rebuilt` holds the score
-- up to which members are counted, and inserts and trims count a member only up to it.
-- Readers read such a model from its events until `layout` is set.
--
-- FIELDS names the totals, in the order of ARGV[2]'s sums; LAYOUT, the hash layout. The loader
-- renders both lines from the Python schema (redis_telemetry/core/totals.py).
local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}
local LAYOUT = 2
local LIMIT = 2 ^ 52  -- doubles hold integers exactly below 2^53
local TRIM_EVERY = 4
local STEP = 500

-- #include event.lua

-- What leaves or joins the totals, gathered and written at the end. Scalar sums go to Redis
-- before they could lose precision.
local acc = {}
for i = 1, N do acc[i] = 0 end
local buckets, sessions = {}, {}
local SUFFIX = {':n', ':i', ':o', ':t', ':c'}

local function flush(i)
  if acc[i] ~= 0 then
    redis.call('HINCRBY', KEYS[3], FIELDS[i], string.format('%.0f', acc[i]))
    acc[i] = 0
  end
end

-- Add (sign 1) or take (sign -1) usage {events, input, output, total, cost_nusd} to a session.
local function add_session(id, u, sign)
  local s = sessions[id]
  if not s then s = {0, 0, 0, 0, 0}; sessions[id] = s end
  for j = 1, 5 do
    if math.abs(s[j] + sign * u[j]) >= LIMIT then
      redis.call('HINCRBY', KEYS[4], id .. SUFFIX[j], string.format('%.0f', s[j]))
      s[j] = 0
    end
    s[j] = s[j] + sign * u[j]
  end
end

-- Count (sign 1) or uncount (sign -1) one member: its scalar sums when `scalars` (an
-- insert's usually come from ARGV[2] instead), its sketch bucket and session when `index`.
local function count(member, sign, scalars, index)
  local e = effect(member)
  if not e then return end
  if scalars then
    for i = 1, N do
      if math.abs(acc[i] + sign * e.c[i]) >= LIMIT then flush(i) end
      acc[i] = acc[i] + sign * e.c[i]
    end
  end
  if not index then return end
  if e.bucket then buckets[e.bucket] = (buckets[e.bucket] or 0) + sign end
  add_session(e.session, e.u, sign)
end

local window, limit_ttl, grace, cap = string.match(ARGV[1], '^(%d+) (%d+) (%d+) (%d+)$')
local head = {string.match(ARGV[2],
  '^(%d+) (%-?%d+) (%-?%d+)' .. string.rep(' (%d+)', N) .. ' (%d+) (%d+)$')}
local n = tonumber(head[1])
local nb, ns = tonumber(head[N + 4]), tonumber(head[N + 5])
local first = 3 + 2 * (n or 0) + 2 * (nb or 0) + 6 * (ns or 0)  -- the first limit triple
if not cap or #head ~= N + 5 or #ARGV < first - 1 or (#ARGV - first + 1) % 3 ~= 0 then
  return redis.error_reply('record.lua: malformed arguments')
end
window, limit_ttl, grace, cap = tonumber(window), tonumber(limit_ttl), tonumber(grace),
  tonumber(cap)
local reasons, untils = {}, {}
for i = first, #ARGV, 3 do
  local position, ends = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if not position or not ends then
    return redis.error_reply('record.lua: malformed arguments')
  end
  reasons[position], untils[position] = ARGV[i + 2], ends
end

-- An empty events key: whatever else is left of the model (its keys expired or were evicted
-- apart) sums nothing, and the hash starts in today's layout.
local before = redis.call('ZCARD', KEYS[1])
if before == 0 then
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
  redis.call('HSET', KEYS[3], 'layout', LAYOUT)
end

-- The totals must hold what this call may add: checked before anything is written.
local have = redis.call('HMGET', KEYS[3], 'layout', 'rebuilt', 'window_ms', unpack(FIELDS))
for i = 1, N do
  if (tonumber(have[3 + i]) or 0) + tonumber(head[3 + i]) >= 2 ^ 63 - 2 ^ 12 then
    return redis.error_reply('record.lua: totals overflow: ' .. FIELDS[i] .. ' would pass 2^63')
  end
end
-- set_window() stamps the namespace's window into the totals (rewindow.lua): a writer with
-- another window has not seen the change and must not trim with its own, so it is refused.
local stamped = tonumber(have[3])
if stamped and stamped ~= window then
  return redis.error_reply(string.format(
    'record.lua: window mismatch: %s is kept with window_ms=%d, not %d', KEYS[1], stamped, window))
end

local pending = 0
-- A hash of an older layout is rebuilt from the members, STEP a call, oldest first.
local fromhead = true  -- whether ARGV[2]'s sums are added (else each member's own)
local upto = nil  -- while rebuilding: the score up to which members are counted
if tonumber(have[1]) ~= LAYOUT then
  fromhead = false
  if not have[2] then  -- start: forget what an older release summed (but `capped`)
    local capped = redis.call('HGET', KEYS[3], 'capped')
    redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])
    redis.call('HSET', KEYS[3], 'rebuilt', '-inf')
    if capped then redis.call('HSET', KEYS[3], 'capped', capped) end
    if have[3] then redis.call('HSET', KEYS[3], 'window_ms', have[3]) end
    have[2] = '-inf'
  end
  local from = have[2] == '-inf' and '-inf' or '(' .. have[2]
  local page = redis.call('ZRANGEBYSCORE', KEYS[1], from, '+inf', 'WITHSCORES', 'LIMIT', 0, STEP)
  local last = page[#page]
  if #page < 2 * STEP then  -- the last page: the hash is whole again
    for j = 1, #page, 2 do count(page[j], 1, true, true) end
    redis.call('HDEL', KEYS[3], 'rebuilt')
    redis.call('HSET', KEYS[3], 'layout', LAYOUT)
  else  -- up to the page's last score, ties included
    for j = 1, #page, 2 do
      if page[j + 1] ~= last then count(page[j], 1, true, true) end
    end
    for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], last, last)) do
      count(member, 1, true, true)
    end
    redis.call('HSET', KEYS[3], 'rebuilt', last)
    upto = tonumber(last)
    pending = 1
  end
  for i = 1, N do head[3 + i] = '0' end
end
local function counted(score)
  return upto == nil or tonumber(score) <= upto
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
-- A member of this call not stored leaves ARGV[2]'s sums; one stored joins the index.
local function unsent(member)
  if fromhead then count(member, -1, true, false) end
end
local function joined(score, member)
  if counted(score) then count(member, 1, not fromhead, true) end
end
-- Every event stored, in today's layout: the sketch and index take ARGV's entries as they are.
local function all_joined()
  local at = 3 + 2 * n
  for k = at, at + 2 * nb - 1, 2 do
    local b = tonumber(ARGV[k])
    buckets[b] = (buckets[b] or 0) + tonumber(ARGV[k + 1])
  end
  at = at + 2 * nb
  for k = at, at + 6 * ns - 1, 6 do
    add_session(ARGV[k], {tonumber(ARGV[k + 1]), tonumber(ARGV[k + 2]), tonumber(ARGV[k + 3]),
      tonumber(ARGV[k + 4]), tonumber(ARGV[k + 5])}, 1)
  end
end
local newest = cutoff
if n == 1 then  -- the common single event: ZADD NX says whether it was already stored
  if tonumber(ARGV[3]) <= cutoff then
    outside = 1
  elseif redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[4]) == 1 then
    stored = 1
    limited(1)
    newest = tonumber(ARGV[3])
    if fromhead then all_joined() else joined(ARGV[3], ARGV[4]) end
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
    if fromhead then
      all_joined()
    else
      for j = 1, n do joined(ARGV[1 + 2 * j], members[j]) end
    end
  else
    local add, seen = {}, {}
    for j = 1, n do
      local score, member = ARGV[1 + 2 * j], members[j]
      if tonumber(score) <= cutoff then
        outside = outside + 1
        unsent(member)
      elseif existing[j] or seen[member] then
        duplicates = duplicates + 1
        unsent(member)
      else
        seen[member] = true
        stored = stored + 1
        add[#add + 1] = score
        add[#add + 1] = member
        limited(j)
        joined(score, member)
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

-- Trimming: members at or before the cutoff leave, and their sums with them, at most STEP a
-- call. Readers subtract any aged member still present themselves, so a write trims only when
-- it takes the count of stored members to a multiple of TRIM_EVERY (and on every batch and
-- upkeep call): a few aged members may wait, and most single-event writes skip two calls.
local capped = 0
local created = (stored > 0 and before == 0) and 1 or 0
local card = before + stored
if n ~= 1 or card % TRIM_EVERY == 0 or (cap > 0 and card > cap) then  -- aged go before the cap
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'WITHSCORES', 'LIMIT', 0, STEP)
  if #gone > 0 then
    for j = 1, #gone, 2 do
      if counted(gone[j + 1]) then count(gone[j], -1, true, true) end
    end
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #gone / 2 - 1)
    card = card - #gone / 2
    if #gone == 2 * STEP then pending = 1 end
  end
end
if cap > 0 and card > cap then  -- a runaway writer: keep the newest `cap` events
  local excess = math.min(card - cap, STEP)
  local old = redis.call('ZRANGE', KEYS[1], 0, excess - 1, 'WITHSCORES')
  for j = 1, #old, 2 do
    if counted(old[j + 1]) then count(old[j], -1, true, true) end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, excess - 1)
  capped = excess
  if card - excess > cap then pending = 1 end
end

if card == 0 then
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])  -- no events, so nothing to sum
  return {stored, duplicates, outside, now, capped, created, 0}
end
-- One HINCRBY per field for what was added less what left, when that stays exact.
for i = 1, N do
  local plus = head[3 + i]  -- the sum added, as text
  if acc[i] == 0 then
    if plus ~= '0' then redis.call('HINCRBY', KEYS[3], FIELDS[i], plus) end
  elseif tonumber(plus) < LIMIT then
    local net = tonumber(plus) + acc[i]
    if net ~= 0 then redis.call('HINCRBY', KEYS[3], FIELDS[i], string.format('%.0f', net)) end
    acc[i] = 0
  else
    redis.call('HINCRBY', KEYS[3], FIELDS[i], plus)
    flush(i)
  end
end
-- The sketch's counters, 500 buckets a BITFIELD call.
local ops = {}
for b, delta in pairs(buckets) do
  if delta ~= 0 then
    ops[#ops + 1] = 'INCRBY'
    ops[#ops + 1] = 'i32'
    ops[#ops + 1] = '#' .. b
    ops[#ops + 1] = delta
  end
  if #ops >= 2000 then redis.call('BITFIELD', KEYS[5], unpack(ops)); ops = {} end
end
if #ops > 0 then redis.call('BITFIELD', KEYS[5], unpack(ops)) end
-- A session whose event count reaches 0 leaves the index.
for id, d in pairs(sessions) do
  local n = 1
  if d[1] ~= 0 then n = redis.call('HINCRBY', KEYS[4], id .. ':n', string.format('%.0f', d[1])) end
  if n <= 0 then
    redis.call('HDEL', KEYS[4], id .. ':n', id .. ':i', id .. ':o', id .. ':t', id .. ':c')
  else
    for j = 2, 5 do
      if d[j] ~= 0 then
        redis.call('HINCRBY', KEYS[4], id .. SUFFIX[j], string.format('%.0f', d[j]))
      end
    end
  end
end
if capped > 0 then redis.call('HINCRBY', KEYS[3], 'capped', capped) end
-- The keys live until the newest event leaves the window: extended only when a new event
-- needs it, and then by `grace` more, so most writes skip the PEXPIREs.
if redis.call('PTTL', KEYS[3]) < newest - cutoff then
  local ttl = math.floor(newest - cutoff + grace)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
  redis.call('PEXPIRE', KEYS[5], ttl)
end

return {stored, duplicates, outside, now, capped, created, pending}
