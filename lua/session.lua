-- session.lua: one session's usage of ONE model within the window, from the model's session
-- index, at the server's time, in steps of bounded work: a first call, and while members that
-- aged out since the last trim are left to subtract, calls that go on from where the
-- previous one stopped (as snapshot.lua's do).
--
-- KEYS[1]  <ns>:{<model>}:events    sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals    hash; its `layout` says whether the index is whole
-- KEYS[3]  <ns>:{<model>}:sessions  hash; <id>:n, <id>:i, <id>:o, <id>:t, <id>:c per session
--                                    (events, input, output, total tokens, cost_nusd)
-- ARGV[1]  window_ms
-- ARGV[2]  max_aged   the most aged members a call reads
-- ARGV[3]  layout     the oldest totals layout the caller reads
-- ARGV[4]  session_id
-- ARGV[5]  budget     the most bytes of aged members a call reads (at least one member)
-- ARGV[6]  cutoff     '' on a first call; on a later one, the cursor a previous reply gave
-- ARGV[7]  from       (the first call's cutoff, the rank to go on from, the member that was
-- ARGV[8]  oldest     the oldest at the first call); a first call may name from and oldest
--                     too, to resume as snapshot.lua's does
--
-- Returns {now_ms, state, usage, minus, cursor, start}: usage = the session's {events, input,
-- output, total, cost_nusd} in the index (text; empty when it has none, and on a later
-- call), minus = flat position (1..5), value list of what the aged members this call read
-- add to them (values below 2^53; a position may repeat): the window's usage is usage less
-- every call's minus. state, first call: 'ok' (usage empty when the session has none),
-- 'rebuild' (usage empty) when the index is not whole yet (read the events instead), 'aged'
-- when aged members are left to read; later call: 'aged', 'ok' or 'moved' (a trim ran
-- meanwhile: start again). cursor and start as snapshot.lua's. Reads only; each call at most
-- max_aged members and budget bytes.

local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}

-- #include event.lua

-- #include steps.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local max_aged, layout, id, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4],
  tonumber(ARGV[5])
local later = ARGV[6] ~= ''
local cutoff = later and tonumber(ARGV[6]) or now - tonumber(ARGV[1])

-- Read the aged members from rank `first` on (see walk_aged), within this call's bounds:
-- returns the session's minus, the rank it started from and the cursor.
local function subtract(first, oldest)
  local sums = exact_sums({1, 2, 3, 4, 5})
  local start, cursor = walk_aged(cutoff, first, oldest, max_aged, budget,
    function(member)
      local e = effect(member)
      if e and e.session == id then
        for k = 1, 5 do sums.add(k, e.u[k]) end
      end
    end)
  return sums.flat(), start, cursor
end

if later then
  if redis.call('ZRANK', KEYS[1], ARGV[8]) ~= 0 then
    return {now, 'moved', {}, {}, {}, 0}
  end
  local minus, start, cursor = subtract(tonumber(ARGV[7]), ARGV[8])
  return {now, aged_state(cursor), {}, minus, cursor, start}
end

local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #newest == 0 or tonumber(newest[2]) <= cutoff then
  return {now, 'ok', {}, {}, {}, 0}
end
if (tonumber(redis.call('HGET', KEYS[2], 'layout')) or 0) < layout then
  return {now, 'rebuild', {}, {}, {}, 0}
end
local usage = redis.call('HMGET', KEYS[3], id .. ':n', id .. ':i', id .. ':o', id .. ':t',
  id .. ':c')
if not usage[1] then
  return {now, 'ok', {}, {}, {}, 0}
end
for k = 1, 5 do usage[k] = usage[k] or '0' end
local minus, start, cursor = subtract(tonumber(ARGV[7]), ARGV[8])
return {now, aged_state(cursor), usage, minus, cursor, start}
