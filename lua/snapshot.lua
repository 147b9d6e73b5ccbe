-- snapshot.lua: read what one model's snapshot needs, at the server's time, in one atomic step.
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals  hash of running sums over KEYS[1]'s members
-- KEYS[3]  <ns>:{<model>}:limit   string present while the model is subscription-limited
-- ARGV[1]  window_ms
-- ARGV[2]  newest_probe            how many of the newest members to return
-- ARGV[3..] the totals' field names, in the client's order
--
-- Returns {now_ms, totals, aged, newest, limit_pttl}: totals in ARGV order (nil when absent);
-- aged = the members at or before now - window (flat member, score list), which aged out since
-- the last write trimmed and which the client subtracts; newest = the newest members (flat):
-- the newest_probe newest, or every member of the newest millisecond when they share it (the
-- client needs the newest readable member's microseconds, whatever order ties come in).
-- Reads only. Running it as one script makes the sums and the members one consistent view.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
local probe = tonumber(ARGV[2])
local newest = redis.call('ZREVRANGE', KEYS[1], 0, probe - 1, 'WITHSCORES')
if #newest == 2 * probe and newest[2] == newest[#newest] then
  newest = redis.call('ZREVRANGEBYSCORE', KEYS[1], newest[2], newest[2], 'WITHSCORES')
end
return {
  now,
  redis.call('HMGET', KEYS[2], unpack(fields)),
  redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'WITHSCORES'),
  newest,
  redis.call('PTTL', KEYS[3]),
}
