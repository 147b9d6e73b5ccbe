-- rewindow.lua: make ONE model's keys follow a window changed on purpose (set_window).
--
-- KEYS[1]  <ns>:{<model>}:events    sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals    hash of running sums over KEYS[1]'s members (record.lua)
-- KEYS[3]  <ns>:{<model>}:sessions  hash, the session index (record.lua)
-- KEYS[4]  <ns>:{<model>}:latency   string, the latency sketch (record.lua)
-- KEYS[5]  <ns>:{<model>}:ids       hash, the id index (record.lua)
-- ARGV[1]  window_ms  the namespace's new window
-- ARGV[2]  grace_ms   how far past the window the keys' TTLs reach
--
-- The keys then live until the newest event leaves the new window, and grace_ms more: a TTL
-- is only extended, never shortened (the totals' `expires` only grows), and the totals record
-- the window as `window_ms`, which record.lua compares with its own: a writer that has not
-- seen the change is refused, with nothing written.
--
-- Returns the newest event's score (a string), or false when the model has no events.

local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if not newest then return false end
local at = tonumber(newest) + tonumber(ARGV[1]) + tonumber(ARGV[2])
local totals = redis.call('EXISTS', KEYS[2]) == 1
if totals then
  at = math.max(at, tonumber(redis.call('HGET', KEYS[2], 'expires')) or 0)
end
local text = string.format('%.0f', at)
for _, key in ipairs({KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]}) do  -- set where none, else only extended
  redis.call('PEXPIREAT', key, text, 'NX')
  redis.call('PEXPIREAT', key, text, 'GT')
end
if totals then
  redis.call('HSET', KEYS[2], 'window_ms', ARGV[1], 'expires', text)
end
return newest
