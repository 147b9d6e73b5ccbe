-- record.lua: insert completion events for ONE model and trim its rolling window, in one atomic step.
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set; member = msgpack event (carries a unique id),
--                                  score = completed_at in epoch milliseconds
-- KEYS[2]  <ns>:{<model>}:limit   string; present while the model is subscription-limited
-- ARGV[1]  window_ms               rolling window length
-- ARGV[2]  limit_ttl_ms            how long a subscription-limit error blocks the model
-- ARGV[3]  grace_ms                how far past the window the keys' TTLs reach
-- ARGV[4..] triples (score, member, limit_reason); limit_reason is '' unless the event's
--           error is a subscription-limit error, else the text stored in the limit key
--
-- Returns {stored, duplicates, outside_window, now_ms}.
--
-- "now" is Redis's own clock (TIME), never a client's, so replicas with skewed clocks agree.
-- A member that is already present (same event id: a retried write) is not counted again.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local limit_ttl = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local cutoff = now - window

local stored, duplicates, outside = 0, 0, 0
local reason = nil
for i = 4, #ARGV, 3 do
  local score = tonumber(ARGV[i])
  if score <= cutoff then
    outside = outside + 1
  elseif redis.call('ZADD', KEYS[1], 'NX', score, ARGV[i + 1]) == 1 then
    stored = stored + 1
    if ARGV[i + 2] ~= '' then reason = ARGV[i + 2] end
  else
    duplicates = duplicates + 1
  end
end

-- Each new subscription-limit error extends the block to now + limit_ttl; a longer block
-- already in place is kept. A key left without a TTL (set by hand) gets one.
if reason then
  local left = redis.call('PTTL', KEYS[2])
  if left == -1 or left < limit_ttl then
    redis.call('SET', KEYS[2], reason, 'PX', limit_ttl)
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] then
  -- live until the newest event leaves the window, plus grace
  redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(newest[2]) - cutoff + grace))
end

return {stored, duplicates, outside, now}
