-- window.lua: read every event of one model inside its window, at the server's time.
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:limit   string present while the model is subscription-limited
-- ARGV[1]  window_ms
--
-- Returns {now_ms, members, limit_pttl}: members = those scored after now - window, as a flat
-- member, score list. Reads only.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(ARGV[1])
return {
  now,
  redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. cutoff, '+inf', 'WITHSCORES'),
  redis.call('PTTL', KEYS[2]),
}
