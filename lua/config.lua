-- config.lua: claim or confirm the namespace's shared window before a write.
--
-- KEYS[1]  <ns>:config  hash; field window_secs holds the namespace's rolling window
-- ARGV[1]  window_secs  the window this client writes with; set only if none is stored
-- ARGV[2]  ttl_ms       the config lives at least this long (as long as the data it governs)
--
-- Returns the stored window_secs (a string), which the client compares with its own.

redis.call('HSETNX', KEYS[1], 'window_secs', ARGV[1])
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left == -1 or left < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return redis.call('HGET', KEYS[1], 'window_secs')
