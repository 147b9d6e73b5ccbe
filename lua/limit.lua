-- limit.lua: block ONE model until an absolute time, by the server's clock.
--
-- KEYS[1]  <ns>:{<model>}:limit  string; present while the model is subscription-limited
-- ARGV[1]  until_ms  epoch milliseconds at which the block ends
-- ARGV[2]  reason    the text stored in the key (informational: its TTL is what counts)
--
-- Returns the block's milliseconds left after the call; 0 when until_ms is not in the future
-- by the server's clock (TIME), and then nothing is written.
--
-- As record.lua does for a subscription-limit error: a longer block already in place is
-- kept, and a key left without a TTL (set by hand) gets one.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1]) - now
if ttl <= 0 then
  return 0
end
-- The block in place, as its absolute end (a PTTL would count from another clock reading)
local held = redis.call('PEXPIRETIME', KEYS[1])
if held == -1 or held < tonumber(ARGV[1]) then  -- -2: none
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[1])  -- the end itself: not now + ttl
  return ttl
end
return held - now
