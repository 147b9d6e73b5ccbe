-- snapshot.lua: read one model's snapshot from its running totals, at the server's time, in one
-- atomic step of bounded work.
--
-- KEYS[1]  <ns>:{<model>}:events   sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals   hash of running sums and layout (record.lua)
-- KEYS[3]  <ns>:{<model>}:limit    string present while the model is subscription-limited
-- KEYS[4]  <ns>:{<model>}:latency  string; the latency sketch's counters (record.lua)
-- ARGV[1]  window_ms
-- ARGV[2]  newest_probe            how many of the newest members to return
-- ARGV[3]  max_aged                the most aged members this call subtracts itself
-- ARGV[4]  layout                  the totals layout the caller reads
--
-- Returns {now_ms, state, totals, minus, aged_buckets, sketch, newest, limit_pttl, skipped}:
--   state    'ok'; 'empty' when every member is at or before now - window (all aged);
--            'rebuild' when the totals hash is not of `layout` (read the events instead);
--            'aged' when more than max_aged members aged out since the last trim
--   totals   the hash's sums in FIELDS order (nil when absent)
--   minus    what the members that aged out since the last trim (which the totals still
--            hold) add to the totals: flat field, value list, values below 2^53 (a field may
--            repeat)
--   aged_buckets  the sketch buckets of those members that succeeded (one entry each)
--   sketch   KEYS[4]'s value, as it is
--   newest   the newest members (flat member, score list): the newest_probe newest, or every
--            member of the newest millisecond when they share it
--   skipped  how many aged members could not be read (not counted by record.lua either)
-- Reads only. Its work is bounded: a few commands and at most max_aged members decoded.

local FIELDS = {'ok', 'failed', 'latency', 'untimed', 'cost_nusd', 'total', 'input', 'output', 'reasoning', 'cache_read', 'cache_write'}

-- #include event.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local probe, max_aged, layout = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local pttl = redis.call('PTTL', KEYS[3])

local newest = redis.call('ZREVRANGE', KEYS[1], 0, probe - 1, 'WITHSCORES')
if #newest == 0 or tonumber(newest[2]) <= cutoff then
  return {now, 'empty', {}, {}, {}, '', {}, pttl, 0}
end
if #newest == 2 * probe and newest[2] == newest[#newest] then
  newest = redis.call('ZREVRANGEBYSCORE', KEYS[1], newest[2], newest[2], 'WITHSCORES')
end

local held = redis.call('HMGET', KEYS[2], 'layout', unpack(FIELDS))
if tonumber(held[1]) ~= layout then
  return {now, 'rebuild', {}, {}, {}, '', newest, pttl, 0}
end
if redis.call('ZCOUNT', KEYS[1], '-inf', cutoff) > max_aged then
  return {now, 'aged', {}, {}, {}, '', newest, pttl, 0}
end

local minus, acc, aged, skipped = {}, {}, {}, 0
for i = 1, N do acc[i] = 0 end
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)) do
  local e = effect(member)
  if e then
    for i = 1, N do
      if acc[i] + e.c[i] >= 2 ^ 52 then
        minus[#minus + 1] = FIELDS[i]
        minus[#minus + 1] = string.format('%.0f', acc[i])
        acc[i] = 0
      end
      acc[i] = acc[i] + e.c[i]
    end
    if e.bucket then aged[#aged + 1] = e.bucket end
  else
    skipped = skipped + 1
  end
end
for i = 1, N do
  if acc[i] ~= 0 then
    minus[#minus + 1] = FIELDS[i]
    minus[#minus + 1] = string.format('%.0f', acc[i])
  end
end
table.remove(held, 1)
return {now, 'ok', held, minus, aged, redis.call('GET', KEYS[4]) or '', newest, pttl, skipped}
