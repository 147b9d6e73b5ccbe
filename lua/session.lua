-- session.lua: one session's usage of ONE model within the window, from the model's session
-- index, at the server's time, in one atomic step of bounded work.
--
-- KEYS[1]  <ns>:{<model>}:events    sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals    hash; its `layout` says whether the index is whole
-- KEYS[3]  <ns>:{<model>}:sessions  hash; session id -> "events input output total cost_nusd"
-- ARGV[1]  window_ms
-- ARGV[2]  max_aged   the most aged members this call subtracts itself
-- ARGV[3]  layout     the totals layout the caller reads
-- ARGV[4]  session_id
--
-- Returns {now_ms, state, usage}: usage = {events, input, output, total, cost_nusd} as text,
-- over the members in the window; state 'ok', or (usage empty) 'rebuild' when the index is
-- not whole yet, 'aged' when more than max_aged members aged out since the last trim: then
-- read the events instead. Reads only; at most max_aged members decoded.

local FIELDS = {'ok', 'failed', 'latency', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}

-- #include event.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local max_aged, layout, id = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]

local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #newest == 0 or tonumber(newest[2]) <= cutoff then
  return {now, 'ok', {}}
end
if tonumber(redis.call('HGET', KEYS[2], 'layout')) ~= layout then
  return {now, 'rebuild', {}}
end
local held = redis.call('HGET', KEYS[3], id)
if not held then
  return {now, 'ok', {}}
end
local v, j = {0, 0, 0, 0, 0}, 0
for x in string.gmatch(held, '%S+') do j = j + 1; v[j] = tonumber(x) or 0 end
if redis.call('ZCOUNT', KEYS[1], '-inf', cutoff) > max_aged then
  return {now, 'aged', {}}
end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  local e = effect(member)
  if e and e.session == id then
    for k = 1, 5 do v[k] = v[k] - e.u[k] end
  end
end
if v[1] <= 0 then
  return {now, 'ok', {}}
end
return {now, 'ok', {string.format('%.0f', v[1]), string.format('%.0f', v[2]),
  string.format('%.0f', v[3]), string.format('%.0f', v[4]), string.format('%.0f', v[5])}}
