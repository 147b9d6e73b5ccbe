-- session.lua: one session's usage of ONE model within the window, from the model's session
-- index, at the server's time, in one atomic step of bounded work.
--
-- KEYS[1]  <ns>:{<model>}:events    sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals    hash; its `layout` says whether the index is whole
-- KEYS[3]  <ns>:{<model>}:sessions  hash; <id>:n, <id>:i, <id>:o, <id>:t, <id>:c per session
--                                    (events, input, output, total tokens, cost_nusd)
-- ARGV[1]  window_ms
-- ARGV[2]  max_aged   the most aged members this call subtracts itself
-- ARGV[3]  layout     the totals layout the caller reads
-- ARGV[4]  session_id
--
-- Returns {now_ms, state, usage, minus}: usage = the session's {events, input, output, total,
-- cost_nusd} in the index (text; empty when it has none), minus = flat position (1..5), value
-- list of what its members that aged out since the last trim add to them (values below 2^53;
-- a position may repeat): the window's usage is usage less minus. state 'ok', or (usage
-- empty) 'rebuild' when the index is not whole yet, 'aged' when more than max_aged members
-- aged out since the last trim: then read the events instead. Reads only; at most max_aged
-- members decoded.

local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}

-- #include event.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local max_aged, layout, id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #newest == 0 or tonumber(newest[2]) <= cutoff then
  return {now, 'ok', {}, {}}
end
if tonumber(redis.call('HGET', KEYS[2], 'layout')) ~= layout then
  return {now, 'rebuild', {}, {}}
end
local usage = redis.call('HMGET', KEYS[3], id .. ':n', id .. ':i', id .. ':o', id .. ':t',
  id .. ':c')
if not usage[1] then
  return {now, 'ok', {}, {}}
end
if redis.call('ZCOUNT', KEYS[1], '-inf', cutoff) > max_aged then
  return {now, 'aged', {}, {}}
end
local minus, acc = {}, {0, 0, 0, 0, 0}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  local e = effect(member)
  if e and e.session == id then
    for k = 1, 5 do
      if acc[k] + e.u[k] >= 2 ^ 52 then
        minus[#minus + 1] = k
        minus[#minus + 1] = string.format('%.0f', acc[k])
        acc[k] = 0
      end
      acc[k] = acc[k] + e.u[k]
    end
  end
end
for k = 1, 5 do
  if acc[k] ~= 0 then
    minus[#minus + 1] = k
    minus[#minus + 1] = string.format('%.0f', acc[k])
  end
end
for k = 1, 5 do usage[k] = usage[k] or '0' end
return {now, 'ok', usage, minus}
