-- record.lua: insert completion events for ONE model, keep its running totals, latency sketch,
-- session index and id index, and trim its rolling window, in one atomic step of bounded work.
--
-- KEYS[1]  <ns>:{<model>}:events    sorted set; member = msgpack event (carries its id),
--                                    score = completed_at in epoch milliseconds
-- KEYS[2]  <ns>:{<model>}:limit     string; present while the model is subscription-limited
-- KEYS[3]  <ns>:{<model>}:totals    hash; the sums over every member of KEYS[1] (see FIELDS),
--                                    `capped`, `layout`, `window_ms` (set_window's stamp),
--                                    `expires` (when the model's keys expire, epoch ms),
--                                    `gen` (moved on by every call that changes any of the
--                                    model's keys but the limit: the server's time in µs, or
--                                    one more than before; snapshot.lua tells a reader with
--                                    the same `gen` that nothing changed) and, while a rebuild
--                                    runs, `cursor`
-- KEYS[4]  <ns>:{<model>}:sessions  hash; for each session id, fields <id>:n (events), <id>:i
--                                    (input), <id>:o (output), <id>:t (total tokens) and <id>:c
--                                    (cost_nusd), summed over its members of KEYS[1]
-- KEYS[5]  <ns>:{<model>}:latency   string; the latency sketch: the successful completions of
--                                    KEYS[1] per latency bucket, a big-endian signed 32-bit
--                                    counter per bucket (BITFIELD i32 #<bucket>)
-- KEYS[6]  <ns>:{<model>}:ids       hash; event id -> its member's score, for every member of
--                                    KEYS[1]: one event id is one event per model
-- KEYS[7]  <ns>:{<model>}:spend     (optional) hash; the model's spend in nano-USD per UTC hour
--                                    (field h:<hours since the epoch>) and UTC day (d:<days>),
--                                    of the events stored, each in its completion's hour and day
-- ARGV[1]  "window_ms limit_ttl_ms grace_ms max_events", space-separated integers:
--           the rolling window; how long a subscription-limit error blocks the model, counted
--           from the event's completion; how far past the data the keys' TTLs reach; the cap
--           on the model's stored events (0: none; the oldest go)
-- ARGV[2]  "n oldest newest sum_1 .. sum_N nb ns", space-separated integers: the number of
--           events below, their oldest and newest scores, their sums in FIELDS order, as if
--           every one gets stored (exact and non-negative; cost in nano-USD), and how many
--           bucket pairs and session entries follow the ids
-- ARGV[3..2+2n] pairs (score, member), ids distinct
-- ARGV[3+2n..2+3n] the events' ids, in the same order
-- then nb pairs (bucket, count) and ns entries (session, events, input, output, total,
--           cost_nusd; each value below 2^52, a session may repeat): what the events add to
--           the sketch and the session index when every one is stored (else each stored
--           member is read instead)
-- then triples (position, until_ms, limit_reason) for the events (1..n) whose error
--           is a subscription-limit error: when the block ends, in epoch ms (0: the event's
--           completion plus limit_ttl_ms), and the text stored in the limit key
-- then, when KEYS[7] is given, one last argument: "hour nusd hour nusd ...", the cost of the
--           events per completion hour as if every one is stored (see PROVIDER SPEND below)
-- (Packing settings and sums into two arguments keeps a one-event call small; the common
-- batch, all new and in the window, goes to ZADD with its arguments as they are.)
-- A call with n = 0 stores nothing and only does the upkeep below (trims, rebuild).
-- The common call (one new event, not a limit error, into a model whose keys are all in
-- place, no upkeep due, every total below 2^52) takes a path of fewer commands, fast() below;
-- every other call, or one fast() hands back before writing, takes the general path.
--
-- Refuses (an error reply starting 'record.lua: totals overflow', nothing written) a call
-- whose sums would take a total past what HINCRBY holds (2^63 - 1, less a margin for the
-- doubles the check compares in), and (an error reply starting 'record.lua: window mismatch')
-- a call whose window differs from the `window_ms` that set_window() stamped into the totals.
--
-- Returns {stored, duplicates, outside_window, now_ms, capped, created, pending[, positions]};
-- positions, only when the call stored some of its events but not all (0 < stored < n), lists
-- the 1-based positions (in ARGV's order) of the events it stored, ascending: stored = n or
-- stored = 0 says it otherwise, so the common replies stay as they were; capped
-- counts the oldest events removed to respect max_events (also added to the totals' `capped`
-- field); created is 1 when this call stored into an events key that held nothing (a new
-- model, or Redis lost its data: the client then lists the model in the registry again);
-- pending is 1 while upkeep is left for later calls (aged or excess members, or a rebuild).
--
-- "now" is Redis's own clock (TIME), never a client's, so replicas with skewed clocks agree.
-- An event whose id the model already holds (a retried write, even rebuilt with other fields)
-- is not stored and not counted; a namesake that already left the window does not count.
-- The totals, sketch, session index and id index stay equal to the sums over the members of
-- KEYS[1]: the batch's sums are added less the events not stored, and every member trimmed
-- here is subtracted. A field whose sum is 0 may be absent.
--
-- Bounded work: one call reads at most STEP members for each kind of upkeep (aged members,
-- members over the cap, a rebuild), and at most BYTES bytes of members for all of them
-- together, fetched by rank CHUNK at a time, so no call holds Redis for long whatever came
-- before (a long idle stretch, a restore, a lower cap, members of the largest size, tens of
-- thousands of events in one millisecond). What is left waits for the next call; readers
-- subtract aged members themselves, so the numbers stay exact meanwhile.
--
-- Rebuild: a totals hash whose `layout` is not LAYOUT (written by an older release, or one of
-- the model's keys was evicted alone) is rebuilt from the members, oldest first, a bounded
-- step a call. Field `cursor` holds the last member counted ('' for none): a member is counted
-- while its rank is at most the cursor's, so inserts and trims in between stay exact. Ids met
-- twice meanwhile keep their first member. Readers read such a model from its events.
--
-- TTLs: every key of the model lives until its newest member leaves the window, plus `grace`
-- (when extended, `slack` more: a sixteenth of the window, at most SLACK ms, so that most
-- writes skip the PEXPIREATs). No call shortens a key's life: `expires` only grows, and every
-- key created is given it.
--
-- FIELDS names the totals, in the order of ARGV[2]'s sums; LAYOUT, the hash layout. The loader
-- renders both lines, and STEP, BYTES, CHUNK and SLACK, from the Python side
-- (redis_telemetry/core/).
local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}
local LAYOUT = 3
local LIMIT = 2 ^ 52  -- doubles hold integers exactly below 2^53
local TRIM_EVERY = 4
local STEP = 500
local BYTES = 1048576
local CHUNK = 32
local SLACK = 30000

-- #include event.lua

-- A session's fields in the session index: events, input, output, total, cost_nusd.
local SUFFIX = {':n', ':i', ':o', ':t', ':c'}

-- PROVIDER SPEND (1/3): the last argument when KEYS[7] is given; `spent` lists the
-- {score, member} of the events stored when only some of the call's are.
local SPEND = KEYS[7] and table.remove(ARGV) or nil
local spent = nil

local window, limit_ttl, grace, cap = string.match(ARGV[1], '^(%d+) (%d+) (%d+) (%d+)$')
local head = {string.match(ARGV[2],
  '^(%d+) (%-?%d+) (%-?%d+)' .. string.rep(' (%d+)', N) .. ' (%d+) (%d+)$')}
local n = tonumber(head[1])
local nb, ns = tonumber(head[N + 4]), tonumber(head[N + 5])
local ids_at = 3 + 2 * (n or 0)  -- the first id
local first = ids_at + (n or 0) + 2 * (nb or 0) + 6 * (ns or 0)  -- the first limit triple
if not cap or #head ~= N + 5 or #ARGV < first - 1 or (#ARGV - first + 1) % 3 ~= 0 then
  return redis.error_reply('record.lua: malformed arguments')
end
window, limit_ttl, grace, cap = tonumber(window), tonumber(limit_ttl), tonumber(grace),
  tonumber(cap)
-- How far past `grace` an extended TTL reaches: a model's keys are then extended once per
-- `slack` of its events' time, not on every write that moves its newest event on.
local slack = math.min(math.floor(window / 16), SLACK)
local reasons, untils = {}, {}
for i = first, #ARGV, 3 do
  local position, ends = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if not position or not ends then
    return redis.error_reply('record.lua: malformed arguments')
  end
  reasons[position], untils[position] = ARGV[i + 2], ends
end

-- PROVIDER SPEND (2/3): add_spend(now, all) adds each stored event's cost (all: every event of
-- the call was stored, else those `spent` lists) to the hour and the day of its completion,
-- only when that hour (day) is the current one or later by the server's clock: no budget reads
-- an older one. A call that starts a field drops the fields of past hours and days, so the hash
-- holds the current hour and day and later ones only, and extends the key's life to the end of
-- the latest day it holds, plus grace (never shortened). Its writes are pcalls: a spend key of
-- another type (written by hand) is left alone, and the event is stored all the same.
local function add_spend(now, all)
  if not SPEND then return end
  local hour_now, day_now = math.floor(now / 3600000), math.floor(now / 86400000)
  local last, broken, started = nil, false, false  -- the latest day; a call refused; a new field
  local function spend(hour, nusd)
    local day = math.floor(hour / 24)
    if broken or day < day_now then return end
    local fields = {'d:' .. day}
    if hour >= hour_now then fields[2] = 'h:' .. hour end
    local text = type(nusd) == 'string' and nusd or string.format('%.0f', nusd)
    for _, f in ipairs(fields) do
      local r = redis.pcall('HINCRBY', KEYS[7], f, text)
      if type(r) == 'table' and r.err then broken = true; return end
      if r == tonumber(text) then started = true end
    end
    last = math.max(last or day, day)
  end
  if all then  -- every event stored: the argument's sums, as they are
    for h, c in string.gmatch(SPEND, '(%d+) (%d+)') do spend(tonumber(h), c) end
  elseif spent then
    for _, sm in ipairs(spent) do
      local e = effect(sm[2])
      if e and e.u[5] > 0 then spend(math.floor(tonumber(sm[1]) / 3600000), e.u[5]) end
    end
  end
  -- Only a call that starts a field can create the key or reach a later day: it prunes and
  -- extends; the other calls are their HINCRBYs alone.
  if last and started and not broken then
    local held, old = redis.call('HGETALL', KEYS[7]), {}
    for j = 1, #held, 2 do
      local kind, at = string.match(held[j], '^(%a):(%d+)$')
      if not kind or (kind == 'h' and tonumber(at) < hour_now)
        or (kind == 'd' and tonumber(at) < day_now) then old[#old + 1] = held[j] end
    end
    if #old > 0 then redis.call('HDEL', KEYS[7], unpack(old)) end
    local ends = string.format('%.0f', (last + 1) * 86400000 + grace)
    redis.call('PEXPIREAT', KEYS[7], ends, 'NX')
    redis.call('PEXPIREAT', KEYS[7], ends, 'GT')
  end
end

-- The totals' next `gen` (see KEYS[3]): the server's time `t` (TIME's reply) in µs, or one
-- more than `was` when that is not later (a clock stepped back), so that it never repeats.
local function next_gen(t, was)
  local us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  return string.format('%.0f', math.max(us, (tonumber(was) or 0) + 1))
end

-- The common call, by a path of fewer commands: one new event, not a subscription-limit
-- error, into a model in today's layout whose keys are all in place with their TTLs, with
-- no upkeep due and every total below 2^52. It writes what the general path below writes:
-- the totals' new values in one HSET (they are read anyway, for the checks), the session's
-- usage as HINCRBYs, the sketch's bucket in one BITFIELD, the TTLs extended as below.
-- (A step that adds each stored event into another per-model sum goes where the event is
-- stored, as `limited` does for the general path.)
-- Anything else (a duplicate id, an aged event, a trim, the cap or a rebuild due, a key
-- missing, `expires` unset) returns nil before anything is written: the general path then
-- does it all.
local function fast()
  if n ~= 1 or ns ~= 1 or nb > 1 or #ARGV ~= first - 1 then return nil end
  local card = redis.call('ZCARD', KEYS[1])
  if card == 0 or (cap > 0 and card + 1 > cap) then return nil end
  local have = redis.call('HMGET', KEYS[3], 'layout', 'cursor', 'window_ms', 'expires', 'gen',
    unpack(FIELDS))
  local expires = tonumber(have[4])
  if tonumber(have[1]) ~= LAYOUT or have[2] or (have[3] and tonumber(have[3]) ~= window)
    or not expires then
    return nil
  end
  local put, old = {}, {}
  for i = 1, N do
    local was = tonumber(have[5 + i] or 0)  -- absent: 0
    if not was or was < 0 or was ~= math.floor(was) then return nil end
    local new = was + tonumber(head[3 + i])
    if new >= LIMIT then return nil end
    old[FIELDS[i]] = was
    if new ~= was then
      put[#put + 1] = FIELDS[i]
      put[#put + 1] = string.format('%d', new)
    end
  end
  local timed = old.ok - old.untimed
  if old.ok + old.failed <= 0 then return nil end
  local kept
  if timed > 0 then
    kept = redis.call('EXISTS', KEYS[4], KEYS[5], KEYS[6]) - 1
  elseif nb == 0 then
    kept = redis.call('EXISTS', KEYS[4], KEYS[6])
  end
  if kept ~= 2 then return nil end  -- an index evicted, or a sketch to create
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local score = tonumber(ARGV[3])
  if score <= now - window then return nil end
  if (card + 1) % TRIM_EVERY == 0 then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    if tonumber(oldest[2]) <= now - window then return nil end
  end
  if redis.call('HSETNX', KEYS[6], ARGV[ids_at], ARGV[3]) == 0 then return nil end
  if redis.call('ZADD', KEYS[1], 'NX', ARGV[3], ARGV[4]) == 0 then
    return {0, 1, 0, now, 0, 0, 0}  -- the same member, already stored
  end
  -- The event is stored: what it adds to each per-model sum follows.
  add_spend(now, true)  -- PROVIDER SPEND
  local need = score + window
  local extend = expires < need
  local text = extend and string.format('%d', need + grace + slack)
  if extend then
    put[#put + 1] = 'expires'
    put[#put + 1] = text
  end
  put[#put + 1] = 'gen'
  put[#put + 1] = next_gen(t, have[5])
  redis.call('HSET', KEYS[3], unpack(put))
  if nb == 1 then
    redis.call('BITFIELD', KEYS[5], 'INCRBY', 'i32', '#' .. ARGV[ids_at + 1], ARGV[ids_at + 2])
  end
  local at = ids_at + 1 + 2 * nb  -- the session entry
  for j = 1, 5 do
    if ARGV[at + j] ~= '0' then
      redis.call('HINCRBY', KEYS[4], ARGV[at] .. SUFFIX[j], ARGV[at + j])
    end
  end
  if extend then
    for _, key in ipairs({KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}) do
      redis.call('PEXPIREAT', key, text, 'NX')  -- a key left without one (set by hand)
      redis.call('PEXPIREAT', key, text, 'GT')
    end
  end
  return {1, 0, 0, now, 0, 0, 0}
end
local done = fast()
if done then return done end

-- The general path. (Its state and helpers are made only now: the common call above
-- returns before paying for them.)

-- What leaves or joins the totals, gathered and written at the end. Scalar sums go to Redis
-- before they could lose precision.
local acc = {}
for i = 1, N do acc[i] = 0 end
local buckets, sessions = {}, {}
local ids_add, ids_gone = {}, {}  -- id -> score joining the id index; {id, score} leaving it

-- Write the id index entries gathered so far.
local function write_ids()
  local set = {}
  for id, score in pairs(ids_add) do
    set[#set + 1] = id
    set[#set + 1] = score
    if #set >= 1000 then redis.call('HSET', KEYS[6], unpack(set)); set = {} end
  end
  if #set > 0 then redis.call('HSET', KEYS[6], unpack(set)) end
  ids_add = {}
end

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

-- Count (sign 1) or uncount (sign -1) one member scored `score`: its scalar sums when
-- `scalars` (an insert's usually come from ARGV[2] instead), its sketch bucket, session and
-- id when `index`.
local function count(member, score, sign, scalars, index, e)
  e = e or effect(member)
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
  if sign > 0 then
    ids_add[e.id] = score
  else
    ids_gone[#ids_gone + 1] = {e.id, score}
  end
end

-- The call's byte budget for upkeep reads, shared by every kind.
local budget = BYTES
-- Up to `most` members from rank `from`, oldest first, CHUNK a fetch, while the byte budget
-- lasts (at least one is read); with `upto`, only those scored at or before it. Returns the
-- flat member, score list, and whether it reached the last such member.
local function take(from, most, upto)
  local out, got = {}, 0
  while got < most do
    local want = math.min(CHUNK, most - got)
    local page = redis.call('ZRANGE', KEYS[1], from + got, from + got + want - 1, 'WITHSCORES')
    for j = 1, #page, 2 do
      if upto and tonumber(page[j + 1]) > upto then return out, true end
      out[#out + 1] = page[j]
      out[#out + 1] = page[j + 1]
      got = got + 1
      budget = budget - #page[j]
      if budget <= 0 then return out, false end
    end
    if #page < 2 * want then return out, true end
  end
  return out, false
end

-- An empty events key: whatever else is left of the model (its keys expired or were evicted
-- apart) sums nothing, and the hash starts in today's layout.
local before = redis.call('ZCARD', KEYS[1])
local retime = false  -- whether a key may lack its TTL (created, or rebuilt)
if before == 0 then
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  redis.call('HSET', KEYS[3], 'layout', LAYOUT)
  retime = true
end

-- The totals must hold what this call may add: checked before anything is written.
local have = redis.call('HMGET', KEYS[3], 'layout', 'cursor', 'window_ms', 'expires', 'gen',
  unpack(FIELDS))
local F = 5  -- have[F + i] is FIELDS[i]
for i = 1, N do
  if (tonumber(have[F + i]) or 0) + tonumber(head[3 + i]) >= 2 ^ 63 - 2 ^ 12 then
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
local expires = tonumber(have[4])
local function total(name)
  for i = 1, N do if FIELDS[i] == name then return tonumber(have[F + i]) or 0 end end
end
local counted_before = total('ok') + total('failed')
local timed_before = total('ok') - total('untimed')

-- A key evicted alone (the session index, the id index, the sketch) is detected from the
-- totals, which say it must exist, and rebuilt with the rest from the members.
local layout = tonumber(have[1])
if layout == LAYOUT and counted_before > 0 then
  if redis.call('EXISTS', KEYS[4], KEYS[6]) < 2
    or (timed_before > 0 and redis.call('EXISTS', KEYS[5]) == 0) then
    layout, have[2] = nil, nil
  end
end
if counted_before == 0 then retime = true end  -- the indexes may be created by this call

local pending = 0
local fromhead = true  -- whether ARGV[2]'s sums are added (else each member's own)
local cursor = nil  -- while rebuilding: the last member counted ('' for none)
if layout ~= LAYOUT then
  fromhead = false
  retime = true
  cursor = have[2]
  if not cursor then  -- start: forget what was summed (but `capped` and the stamp)
    local capped = redis.call('HGET', KEYS[3], 'capped')
    redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
    redis.call('HSET', KEYS[3], 'cursor', '')
    if capped then redis.call('HSET', KEYS[3], 'capped', capped) end
    if have[3] then redis.call('HSET', KEYS[3], 'window_ms', have[3]) end
    if expires then redis.call('HSET', KEYS[3], 'expires', string.format('%.0f', expires)) end
    cursor = ''
  end
  local from = 0
  if cursor ~= '' then
    local r = redis.call('ZRANK', KEYS[1], cursor)
    -- gone: trims remove a prefix, so every member counted before it went with it
    if r then from = r + 1 else cursor = '' end
  end
  local page, ended = take(from, STEP)
  local seen, dups, kept = {}, {}, nil
  local page_ids, effects = {}, {}
  for j = 1, #page, 2 do
    local e = effect(page[j])
    effects[#effects + 1] = e or false
    page_ids[#page_ids + 1] = e and e.id or ''
  end
  local known = #page_ids > 0 and redis.call('HMGET', KEYS[6], unpack(page_ids)) or {}
  for j = 1, #page, 2 do
    local id = page_ids[(j + 1) / 2]
    if id ~= '' and (known[(j + 1) / 2] or seen[id]) then
      dups[#dups + 1] = page[j]  -- a later namesake of a member already counted
    else
      if id ~= '' then seen[id] = true end
      count(page[j], page[j + 1], 1, true, true, effects[(j + 1) / 2] or nil)
      kept = page[j]
    end
  end
  if #dups > 0 then redis.call('ZREM', KEYS[1], unpack(dups)) end
  write_ids()  -- the inserts below check the index
  if ended then  -- the last page: the hash is whole again
    redis.call('HDEL', KEYS[3], 'cursor')
    redis.call('HSET', KEYS[3], 'layout', LAYOUT)
    cursor = nil
  else
    cursor = kept or cursor
    redis.call('HSET', KEYS[3], 'cursor', cursor)
    pending = 1
  end
  for i = 1, N do head[3 + i] = '0' end
end
local rebuilding = cursor ~= nil
-- The rank of the last member counted (-1: none), while rebuilding.
local function cursor_rank()
  if cursor == '' then return -1 end
  return redis.call('ZRANK', KEYS[1], cursor) or -1
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - window

local stored, duplicates, outside = 0, 0, 0
local added = {}  -- the positions of the events stored, when only some of them are
local newest = nil  -- the newest score stored by this call
local reason, block = nil, 0  -- the latest block end a stored event names, and its text
local function limited(j)
  local text = reasons[j]
  if not text then return end
  local ends = untils[j] > 0 and untils[j] or tonumber(ARGV[1 + 2 * j]) + limit_ttl
  if ends >= block then block, reason = ends, text end
end
-- A member of this call not stored leaves ARGV[2]'s sums.
local function unsent(member)
  if fromhead then count(member, 0, -1, true, false) end
end
-- Every event stored, in today's layout: the sketch and index take ARGV's entries as they are.
local function all_joined()
  local at = ids_at + n
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
-- Whether an id index entry (a score, or false) names a member still in the window.
local function live(held)
  return held and tonumber(held) > cutoff
end

if n == 1 and not rebuilding then  -- the common single event
  local score, member, id = ARGV[3], ARGV[4], ARGV[ids_at]
  local fresh = false
  if tonumber(score) <= cutoff then
    outside = 1
  elseif redis.call('HSETNX', KEYS[6], id, score) == 1 then
    fresh = true
  elseif not live(redis.call('HGET', KEYS[6], id)) then  -- its namesake aged: replace it
    redis.call('HSET', KEYS[6], id, score)
    fresh = true
  end
  if fresh and redis.call('ZADD', KEYS[1], 'NX', score, member) == 1 then
    stored = 1
    newest = tonumber(score)
    limited(1)
    if fromhead then all_joined() else count(member, score, 1, true, true) end
  elseif outside == 0 then
    duplicates = 1
  end
  if stored == 0 then  -- nothing to add: the sums were this one event's
    for i = 1, N do head[3 + i] = '0' end
  end
elseif n >= 1 then
  local members, ids = {}, {}
  for j = 1, n do
    members[j] = ARGV[1 + 2 * j + 1]
    ids[j] = ARGV[ids_at + j - 1]
  end
  local held = redis.call('HMGET', KEYS[6], unpack(ids))
  local clean = not rebuilding and tonumber(head[2]) > cutoff
  local seen = {}
  for j = 1, n do
    if not clean then break end
    if held[j] or seen[ids[j]] then clean = false end
    seen[ids[j]] = true
  end
  if clean then  -- all new and in the window: the arguments are ZADD's, as they are
    redis.call('ZADD', KEYS[1], unpack(ARGV, 3, 2 + 2 * n))
    local pairs_ = {}
    for j = 1, n do
      pairs_[#pairs_ + 1] = ids[j]
      pairs_[#pairs_ + 1] = ARGV[1 + 2 * j]
    end
    redis.call('HSET', KEYS[6], unpack(pairs_))
    stored = n
    newest = tonumber(head[3])
    for j = 1, n do limited(j) end
    if fromhead then
      all_joined()
    else
      for j = 1, n do count(members[j], ARGV[1 + 2 * j], 1, true, true) end
    end
  else
    -- identical members too: while rebuilding, the id index may not list them yet
    local existing = redis.call('ZMSCORE', KEYS[1], unpack(members))
    local add, taken = {}, {}
    for j = 1, n do
      local score, member, id = ARGV[1 + 2 * j], members[j], ids[j]
      if tonumber(score) <= cutoff then
        outside = outside + 1
        unsent(member)
      elseif existing[j] or taken[id] or live(held[j]) then
        duplicates = duplicates + 1
        unsent(member)
      else
        taken[id] = true
        stored = stored + 1
        add[#add + 1] = score
        add[#add + 1] = member
        added[#added + 1] = j
        newest = math.max(newest or tonumber(score), tonumber(score))
        limited(j)
      end
    end
    if #add > 0 then
      spent = {}  -- PROVIDER SPEND: the events stored, for add_spend
      for _, j in ipairs(added) do spent[#spent + 1] = {ARGV[1 + 2 * j], members[j]} end
      redis.call('ZADD', KEYS[1], unpack(add))
      -- while rebuilding, a member at or before the cursor is counted now, a later one when
      -- the rebuild reaches it
      local upto = rebuilding and cursor_rank() or nil
      for _, j in ipairs(added) do
        local score, member = ARGV[1 + 2 * j], members[j]
        if not rebuilding then
          count(member, score, 1, not fromhead, true)
          ids_add[ids[j]] = score  -- also for a member this package cannot read
        elseif upto >= 0 and redis.call('ZRANK', KEYS[1], member) < upto then
          count(member, score, 1, true, true)
        end
      end
    end
  end
end

-- Each new subscription-limit error extends the block to the end it names (else to its
-- completion plus limit_ttl); a longer block already in place is kept. A key left without a
-- TTL (set by hand) gets one. An end already past blocks nothing.
if reason and block > now then
  local held = redis.call('PEXPIRETIME', KEYS[2])  -- the block in place, as its end
  if held == -1 or held < block then  -- -2: none
    redis.call('SET', KEYS[2], reason, 'PXAT', string.format('%.0f', block))
  end
end

-- PROVIDER SPEND (3/3): what the stored events cost joins their hours and days.
if stored > 0 then add_spend(now, stored == n) end

-- Trimming: members at or before the cutoff leave, and their sums with them, at most STEP a
-- call. Readers subtract any aged member still present themselves, so a write trims only when
-- it takes the count of stored members to a multiple of TRIM_EVERY (and on every batch and
-- upkeep call): a few aged members may wait, and most single-event writes skip two calls.
local capped = 0
local created = (stored > 0 and before == 0) and 1 or 0
local card = before + stored
-- Remove the `k` members of rank 0..k-1 listed in `gone`, uncounting those counted.
local function remove(gone)
  local k = #gone / 2
  if k == 0 then return 0 end
  local upto = rebuilding and cursor_rank() or nil
  for j = 1, #gone, 2 do
    if not upto or (j - 1) / 2 <= upto then count(gone[j], gone[j + 1], -1, true, true) end
  end
  redis.call('ZREMRANGEBYRANK', KEYS[1], 0, k - 1)
  if upto and upto < k then cursor = '' end  -- the cursor went too: nothing counted is left
  card = card - k
  return k
end
if n ~= 1 or card % TRIM_EVERY == 0 or (cap > 0 and card > cap) then  -- aged go before the cap
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if oldest[2] and tonumber(oldest[2]) <= cutoff then
    local gone, ended = take(0, STEP, cutoff)
    remove(gone)
    if not ended then pending = 1 end
  end
end
if cap > 0 and card > cap and budget > 0 then  -- a runaway writer: keep the newest `cap`
  capped = remove((take(0, math.min(card - cap, STEP))))
end
if cap > 0 and card > cap then pending = 1 end
if rebuilding then redis.call('HSET', KEYS[3], 'cursor', cursor) end

-- The reply (see the header): the positions stored only when they are some of the call's.
local function reply(still)
  local r = {stored, duplicates, outside, now, capped, created, still}
  if stored > 0 and stored < n then r[8] = added end
  return r
end
if card == 0 then
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])  -- no events, so nothing to sum
  return reply(0)
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
if #ops > 0 then
  redis.call('BITFIELD', KEYS[5], unpack(ops))
  if timed_before <= 0 then retime = true end  -- the sketch may be new
end
-- Hash field `name` of `key`, read as `held` (false: absent), plus `delta` (a number or integer
-- text), written with others: its new value joins the flat name, value list `set` (one HSET
-- for them all) while it stays exact, an integer as Redis writes it below LIMIT; else the
-- field gets its own HINCRBY (Redis's exact arithmetic, or its refusal, as before). Returns
-- the new value. (One read and one write, not an HINCRBY a field: each redis.call costs.)
local function bump(key, set, name, held, delta)
  local was, d = held or '0', tonumber(delta)
  local w = tonumber(was)
  if w and d and math.abs(d) < LIMIT and math.abs(w + d) < LIMIT
    and string.format('%d', w) == was then
    set[#set + 1] = name
    set[#set + 1] = string.format('%d', w + d)
    return w + d
  end
  if type(delta) ~= 'string' then delta = string.format('%.0f', delta) end
  return redis.call('HINCRBY', key, name, delta)
end

-- The session index: SESSIONS sessions at a time, their fields read in one HMGET and written
-- in one HSET (and one HDEL). A session whose event count reaches 0 leaves the index.
local function write_sessions(ids)
  local names = {}
  for _, id in ipairs(ids) do
    for j = 1, 5 do names[#names + 1] = id .. SUFFIX[j] end
  end
  local held = redis.call('HMGET', KEYS[4], unpack(names))
  local set, gone = {}, {}
  for k, id in ipairs(ids) do
    local d, at = sessions[id], 5 * (k - 1)
    local c = 1
    if d[1] ~= 0 then c = bump(KEYS[4], set, names[at + 1], held[at + 1], d[1]) end
    if c <= 0 then
      if set[#set - 1] == names[at + 1] then set[#set] = nil; set[#set] = nil end
      for j = 1, 5 do gone[#gone + 1] = names[at + j] end
    else
      for j = 2, 5 do
        if d[j] ~= 0 then bump(KEYS[4], set, names[at + j], held[at + j], d[j]) end
      end
    end
  end
  if #set > 0 then redis.call('HSET', KEYS[4], unpack(set)) end
  if #gone > 0 then redis.call('HDEL', KEYS[4], unpack(gone)) end
end
local SESSIONS = 200
local changed = {}
for id, d in pairs(sessions) do
  if d[1] ~= 0 or d[2] ~= 0 or d[3] ~= 0 or d[4] ~= 0 or d[5] ~= 0 then
    changed[#changed + 1] = id
    if #changed == SESSIONS then write_sessions(changed); changed = {} end
  end
end
if #changed > 0 then write_sessions(changed) end
-- The id index: a trimmed member's id leaves unless a newer namesake holds it.
if #ids_gone > 0 then
  local names = {}
  for j, g in ipairs(ids_gone) do names[j] = g[1] end
  local held = redis.call('HMGET', KEYS[6], unpack(names))
  local drop = {}
  for j, g in ipairs(ids_gone) do
    if held[j] and tonumber(held[j]) == tonumber(g[2]) and not ids_add[g[1]] then
      drop[#drop + 1] = g[1]
    end
  end
  if #drop > 0 then redis.call('HDEL', KEYS[6], unpack(drop)) end
end
write_ids()
if capped > 0 then redis.call('HINCRBY', KEYS[3], 'capped', capped) end
-- The keys live until the model's newest member leaves the window, and `grace` more: extended
-- only when that moves past `expires`, or a key may be new, so most writes skip the PEXPIREATs.
-- (An event newer than `expires` allows is the model's newest; else the newest is looked up.)
local need = newest and newest + window
if retime or not expires then
  need = tonumber(redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]) + window
end
if need and (retime or not expires or expires < need) then
  local at = math.max(need + grace + slack, expires or 0)
  local text = string.format('%.0f', at)
  for _, key in ipairs({KEYS[1], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}) do  -- set where none, else only extended
    redis.call('PEXPIREAT', key, text, 'NX')
    redis.call('PEXPIREAT', key, text, 'GT')
  end
  redis.call('HSET', KEYS[3], 'expires', text)
end
redis.call('HSET', KEYS[3], 'gen', next_gen(t, have[5]))

return reply(pending)
