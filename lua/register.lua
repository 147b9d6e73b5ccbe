-- register.lua: list models in the namespace's registry and drop the ones gone quiet.
--
-- KEYS[1]  <ns>:models  sorted set; member = model name, score = epoch ms until which the
--                       model has events in the window or an active subscription limit
-- ARGV[1]  grace_ms     how far past the newest score the key's TTL reaches
-- ARGV[2..] triples (model, keep_until_ms, keep_for_ms): the model's score becomes
--           max(keep_until_ms, now + keep_for_ms); a score never moves backwards (GT)
--
-- Returns now_ms.
--
-- The registry lives in its own slot, so a cluster cannot update it in the same script as
-- a model's events. Clients call this BEFORE record.lua: a stored event then always belongs
-- to a listed model, even if the client dies between the two calls.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local grace = tonumber(ARGV[1])

for i = 2, #ARGV, 3 do
  local keep = math.max(tonumber(ARGV[i + 1]), now + tonumber(ARGV[i + 2]))
  redis.call('ZADD', KEYS[1], 'GT', keep, ARGV[i])
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] then
  redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(newest[2]) - now + grace))
end

return now
