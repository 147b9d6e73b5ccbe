-- snapshot.lua: read one model's snapshot from its running totals, at the server's time, in
-- steps of bounded work: a first call, and while members that aged out since the last trim
-- are left to subtract, calls that go on from where the previous one stopped.
--
-- KEYS[1]  <ns>:{<model>}:events   sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals   hash of running sums and layout (record.lua)
-- KEYS[3]  <ns>:{<model>}:limit    string present while the model is subscription-limited
-- KEYS[4]  <ns>:{<model>}:latency  string; the latency sketch's counters (record.lua)
-- ARGV[1]  window_ms
-- ARGV[2]  newest_probe   how many of the newest members to return at most while none of
--                         them is readable (this package's)
-- ARGV[3]  max_aged       the most aged members a call subtracts
-- ARGV[4]  layout         the oldest totals layout the caller reads
-- ARGV[5]  budget         the most bytes of aged members a call reads (at least one member)
-- ARGV[6]  newest_ties    the most members of the newest millisecond to return
-- ARGV[7]  newest_budget  the most bytes of newest members to return (at least one member)
-- ARGV[8]  cutoff         '' on a first call; on a later one, the cursor a previous reply
-- ARGV[9]  from           gave: the cutoff (ms) of the first call, the rank to go on from, and
-- ARGV[10] oldest         the member that was the oldest at the first call. A first call may
--                         name from and oldest too (from an earlier read): while that member
--                         is still at rank 0, the aged members ranked below `from` are the
--                         same ones, and it subtracts from `from` on
--
-- Returns {now_ms, state, totals, minus, aged_buckets, sketch, newest, limit_pttl, skipped,
-- cursor, start}:
--   state    first call: 'ok'; 'empty' when every member is at or before now - window (all
--            aged); 'rebuild' when the totals hash is older than `layout` (read the events
--            instead); 'aged' when aged members are left to subtract (then totals, sketch,
--            newest and limit_pttl are whole and minus, aged_buckets and skipped partial).
--            Later call: 'aged' (more left), 'ok' (done), or 'moved' when the member that
--            was the oldest is no longer (a trim ran meanwhile: start again with a first call)
--   totals   the hash's sums in FIELDS order (nil when absent)
--   minus    what the aged members this call read add to the totals: flat field, value
--            list, values below 2^53 (a field may repeat)
--   aged_buckets  the sketch buckets of those members that succeeded (one entry each)
--   sketch   KEYS[4]'s value, as it is
--   newest   the newest members (flat member, score list, newest first): those of the
--            newest millisecond, up to newest_ties members and newest_budget bytes in all
--            (past that, a sample of it); when none of them looks like this package's
--            event (a version-1 event's first two bytes: a full decode would cost more than
--            the rest of the call), the next milliseconds' too, until one does or
--            newest_probe members are taken
--   skipped  how many aged members this call could not read (not counted by record.lua)
--   cursor   {} when no member is aged; else {cutoff, next, aged, card, oldest}: the cutoff
--            the aged part is counted at, the rank to go on from (aged when all are read),
--            how many members are aged, how many the set holds, and the oldest member (''
--            when the caller named it: a later call, or a first call that resumed)
--   start    the rank this call's subtraction started from
-- A later call returns now_ms, state, minus, aged_buckets, skipped, cursor and start only.
--
-- Aged members are those scored at or before the first call's cutoff; as long as the oldest
-- of them is still the set's rank 0, no trim ran (trims remove the lowest ranks, and record.lua
-- stores nothing at or before its own cutoff), so ranks below `aged` are the same members at
-- every call and the pieces add up to the first call's snapshot.
-- Reads only. Each call: a few commands, at most max_aged aged members and budget bytes.

local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}

-- #include event.lua

-- #include steps.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_aged, layout, budget = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local later = ARGV[8] ~= ''
local cutoff = later and tonumber(ARGV[8]) or now - tonumber(ARGV[1])

-- Subtract the aged members from rank `first` on (see walk_aged), within this call's
-- bounds: returns minus, aged_buckets, skipped, the rank it started from and the cursor.
local function subtract(first, oldest)
  local sums, buckets, skipped = exact_sums(FIELDS), {}, 0
  local start, cursor = walk_aged(cutoff, first, oldest, max_aged, budget,
    function(member)
      local e = effect(member)
      if not e then
        skipped = skipped + 1
        return
      end
      for i = 1, N do sums.add(i, e.c[i]) end
      if e.bucket then buckets[#buckets + 1] = e.bucket end
    end)
  return sums.flat(), buckets, skipped, start, cursor
end

if later then
  if redis.call('ZRANK', KEYS[1], ARGV[10]) ~= 0 then
    return {now, 'moved', {}, {}, {}, '', {}, -2, 0, {}, 0}
  end
  local minus, buckets, skipped, start, cursor = subtract(tonumber(ARGV[9]), ARGV[10])
  return {now, aged_state(cursor), {}, minus, buckets, '', {}, -2, skipped, cursor, start}
end

local pttl = redis.call('PTTL', KEYS[3])
local probe, newest, top, at, readable = tonumber(ARGV[2]), {}, nil, nil, false
walk(true, 0, math.huge, tonumber(ARGV[6]), tonumber(ARGV[7]), function(member, score)
  if top == nil then top = score end
  if tonumber(top) <= cutoff then return true end  -- all aged: nothing else to read
  if score ~= at and (readable or #newest >= 2 * probe) then return true end
  at = score
  newest[#newest + 1] = member
  newest[#newest + 1] = score
  if not readable then readable = byte(member, 1) == 0x9e and byte(member, 2) == 1 end
end, 2)
if top == nil or tonumber(top) <= cutoff then
  return {now, 'empty', {}, {}, {}, '', {}, pttl, 0, {}, 0}
end

local held = redis.call('HMGET', KEYS[2], 'layout', unpack(FIELDS))
if (tonumber(held[1]) or 0) < layout then
  return {now, 'rebuild', {}, {}, {}, '', newest, pttl, 0, {}, 0}
end
table.remove(held, 1)
local minus, buckets, skipped, start, cursor = subtract(tonumber(ARGV[9]), ARGV[10])
local sketch = redis.call('GET', KEYS[4]) or ''
return {now, aged_state(cursor), held, minus, buckets, sketch, newest, pttl, skipped, cursor,
  start}
