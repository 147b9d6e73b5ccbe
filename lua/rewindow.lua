-- rewindow.lua: make ONE model's keys follow a window changed on purpose (set_window).
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:totals  hash of running sums over KEYS[1]'s members
-- KEYS[3]  <ns>:{<model>}:sessions  hash, the session index (record.lua)
-- KEYS[4]  <ns>:{<model>}:latency   string, the latency sketch (record.lua)
-- ARGV[1]  window_ms  the namespace's new window
-- ARGV[2]  grace_ms   how far past the window the keys' TTLs reach
--
-- The four keys then live until the newest event leaves the new window (a TTL is only extended,
-- never shortened), and the totals record the window as `window_ms`, which record.lua compares
-- with its own: a writer that has not seen the change is refused, with nothing written.
--
-- Returns the newest event's score (a string), or false when the model has no events.

local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
if not newest then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = math.floor(tonumber(newest) + tonumber(ARGV[1]) - now + tonumber(ARGV[2]))
if ttl > 0 and redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
-- the session index and the sketch, where they exist
local index_left, sketch_left = redis.call('PTTL', KEYS[3]), redis.call('PTTL', KEYS[4])
if ttl > 0 and index_left ~= -2 and index_left < ttl then redis.call('PEXPIRE', KEYS[3], ttl) end
if ttl > 0 and sketch_left ~= -2 and sketch_left < ttl then redis.call('PEXPIRE', KEYS[4], ttl) end
local left = redis.call('PTTL', KEYS[2])
if left ~= -2 then
  if ttl > 0 and left < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
  redis.call('HSET', KEYS[2], 'window_ms', ARGV[1])
end
return newest
