-- snapshot.lua: read one model's snapshot from its running totals, at the server's time, in
-- steps of bounded work: a first call, and while members that aged out since the last trim
-- are left to subtract, calls that go on from where the previous one stopped.
--
-- KEYS[1]  <ns>:{<model>}:events   sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals   hash of running sums and layout (record.lua)
-- KEYS[3]  <ns>:{<model>}:limit    string present while the model is subscription-limited
-- KEYS[4]  <ns>:{<model>}:latency  string; the latency sketch's counters (record.lua)
-- KEYS[5]  <ns>:{<model>}:spend    hash; the model's spend per hour and day (record.lua)
-- ARGV[1]  settings       the call's constants, one string of whole numbers (one argument,
--                         not seven: each costs the client and the script): window_ms,
--                         newest_probe (how many of the newest members to return at most
--                         while none of them is readable: this package's), max_aged (the most
--                         aged members a call subtracts), layout (the oldest totals layout the
--                         caller reads), budget (the most bytes of aged members a call reads,
--                         at least one member), newest_ties (the most members of the newest
--                         millisecond to return), newest_budget (the most bytes of newest
--                         members to return, at least one member), and optionally `known`:
--                         the gen and card of an earlier 'ok' reply without aged members
--                         that the caller holds, two more numbers (see 'same' below)
-- ARGV[2]  cutoff         '' on a first call; on a later one, the cursor a previous reply
-- ARGV[3]  from           gave: the cutoff (ms) of the first call, the rank to go on from, and
-- ARGV[4]  oldest         the member that was the oldest at the first call. A first call may
--                         name from and oldest too (from an earlier read): while that member
--                         is still at rank 0, the aged members ranked below `from` are the
--                         same ones, and it subtracts from `from` on. A first call from rank 0
--                         may leave out ARGV[2..4] (read as '', 0, '')
--
-- Returns {now_ms, state, totals, minus, aged_buckets, sketch, newest, limit_pttl, skipped,
-- cursor, start, gen, spend, card}, or {now_ms, 'same', limit_pttl} (below):
--   state    first call: 'same' when the caller named `known`, the totals' `gen` and the
--            events key's member count are still its, and no member is aged: nothing of
--            the model changed since the reply the caller holds (record.lua moves `gen` on
--            at every change of the members, totals, sketch or spend; the count catches
--            most changes made otherwise: members added or removed by hand, or by a writer
--            of an older release), which is then exact with this now_ms and limit_pttl;
--            'ok'; 'empty' when every member is at or before now - window (all
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
--   gen      the totals' `gen` (false when absent): what a later first call names as `known`
--   spend    KEYS[5]'s fields and values (flat), false when it is of another type (written
--            by hand): a router reads its candidates' spend here, not with one more command
--            each (record.lua writes it in the call that moves `gen`)
--   card     how many members the events key holds (ZCARD): named in `known` with gen
-- A later call returns now_ms, state, minus, aged_buckets, skipped, cursor and start only.
--
-- Aged members are those scored at or before the first call's cutoff; as long as the oldest
-- of them is still the set's rank 0, no trim ran (trims remove the lowest ranks, and record.lua
-- stores nothing at or before its own cutoff), so ranks below `aged` are the same members at
-- every call and the pieces add up to the first call's snapshot.
-- Reads only. Each call: a few commands, at most max_aged aged members and budget bytes.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- KEYS[3]'s time left by this script's clock: from its absolute expiry, so that now_ms plus it
-- is exactly when the block ends (PTTL counts from the moment it runs, which may be a
-- millisecond past `now`); -2 when absent or already over, -1 without an expiry.
local function limit_left()
  local at = redis.call('PEXPIRETIME', KEYS[3])
  return (at < 0 and at) or (at > now and at - now) or -2
end

-- Nothing changed since the caller's reply: four cheap commands, nothing read back. (First,
-- before anything else of the script is made: most reads of a router end here.)
local window, known, card =
  string.match(ARGV[1], '^(%d+) %d+ %d+ %d+ %d+ %d+ %d+ (%d+) (%d+)$')
if known and (ARGV[2] or '') == '' and redis.call('HGET', KEYS[2], 'gen') == known
  and redis.call('ZCARD', KEYS[1]) == tonumber(card)
  and redis.call('ZCOUNT', KEYS[1], '-inf', string.format('%.0f', now - tonumber(window))) == 0 then
  return {now, 'same', limit_left()}
end

local probe, max_aged, layout, budget, ties, newest_budget, rest
window, probe, max_aged, layout, budget, ties, newest_budget, rest =
  string.match(ARGV[1], '^(%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+)(.*)$')
if not (rest == '' or (rest and string.match(rest, '^ %d+ %d+$'))) then
  error('snapshot.lua: malformed settings ' .. ARGV[1])
end
max_aged, layout, budget = tonumber(max_aged), tonumber(layout), tonumber(budget)
local later = (ARGV[2] or '') ~= ''
local cutoff = later and tonumber(ARGV[2]) or now - tonumber(window)
local from, oldest = tonumber(ARGV[3] or 0), ARGV[4] or ''
local upto = string.format('%.0f', cutoff)  -- the cutoff, as ZCOUNT reads it

local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}

-- The functions that read members and walk the set (lua/event.lua, lua/steps.lua), made
-- only by a call that needs them: one with aged members to subtract, or whose newest member
-- is not alone in its millisecond or not this package's. Making them every call cost as much
-- as a command.
local function library()
-- #include event.lua

-- #include steps.lua

  return effect, N, walk, walk_aged, aged_state, exact_sums
end

-- Subtract the aged members from rank `first` on (see walk_aged; `aged`: their count, when
-- known), within this call's bounds: returns minus, aged_buckets, skipped, the rank it
-- started from and the cursor.
local function subtract(first, oldest, aged)
  local effect, N, _, walk_aged, aged_state, exact_sums = library()
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
    end, aged)
  return sums.flat(), buckets, skipped, start, cursor, aged_state(cursor)
end

if later then
  if redis.call('ZRANK', KEYS[1], oldest) ~= 0 then
    return {now, 'moved', {}, {}, {}, '', {}, -2, 0, {}, 0}
  end
  local minus, buckets, skipped, start, cursor, state = subtract(from, oldest)
  return {now, state, {}, minus, buckets, '', {}, -2, skipped, cursor, start}
end

local pttl = limit_left()
-- The newest members: the common case (the newest member is this package's event, alone in
-- its millisecond) in one command without the walk; else the walk, from the newest again.
local newest, top = {}, nil
local got = redis.call('ZREVRANGE', KEYS[1], 0, 1, 'WITHSCORES')
local byte = string.byte
if got[1] and byte(got[1], 1) == 0x9e and byte(got[1], 2) == 1 and got[4] ~= got[2] then
  top, newest = got[2], {got[1], got[2]}
elseif got[1] then
  local _, _, walk = library()
  probe = tonumber(probe)
  local at, readable = nil, false
  walk(true, 0, math.huge, tonumber(ties), tonumber(newest_budget), function(member, score)
    if top == nil then top = score end
    if tonumber(top) <= cutoff then return true end  -- all aged: nothing else to read
    if score ~= at and (readable or #newest >= 2 * probe) then return true end
    at = score
    newest[#newest + 1] = member
    newest[#newest + 1] = score
    if not readable then readable = byte(member, 1) == 0x9e and byte(member, 2) == 1 end
  end, 2)
end
-- KEYS[5], read with pcall: a key of another type must not fail the snapshot.
local function spend()
  local got = redis.pcall('HGETALL', KEYS[5])
  if got.err then return false end
  return got
end

if top == nil or tonumber(top) <= cutoff then
  return {now, 'empty', {}, {}, {}, '', {}, pttl, 0, {}, 0, false, spend()}
end

local held = redis.call('HMGET', KEYS[2], 'layout', 'gen', unpack(FIELDS))
if (tonumber(held[1]) or 0) < layout then
  return {now, 'rebuild', {}, {}, {}, '', newest, pttl, 0, {}, 0, false, spend()}
end
local gen = held[2]
table.remove(held, 1)
table.remove(held, 1)
local minus, buckets, skipped, start, cursor, state = {}, {}, 0, 0, {}, 'ok'
local aged = redis.call('ZCOUNT', KEYS[1], '-inf', upto)
if aged > 0 then  -- else nothing to subtract, and the walk would start from rank 0
  minus, buckets, skipped, start, cursor, state = subtract(from, oldest, aged)
end
local sketch = redis.call('GET', KEYS[4]) or ''
return {now, state, held, minus, buckets, sketch, newest, pttl, skipped, cursor, start, gen,
  spend(), redis.call('ZCARD', KEYS[1])}
