-- provider.lua: change ONE provider's shared settings, by the server's clock.
--
-- KEYS[1]  <ns>:{<provider>}:provider  hash; fields hour_cap, day_cap (nano-USD; absent:
--                                      uncapped), xh / xd (the UTC hour / day an exhaust()
--                                      forced), block_until (epoch ms) and block_reason,
--                                      backoff_level and backoff_until (epoch ms)
-- ARGV[1]  settings_ttl_ms  the key lives at least this long after the call
-- ARGV[2]  verb, then its arguments:
--   caps <hour_nusd|''> <day_nusd|''>   set (or, with '', remove) the caps
--   exhaust                             force exhaustion for the current UTC hour and day
--   block <until_ms> <reason>           block until until_ms; a later block in place is kept
--   unblock                             end the block and the backoff (level back to 0)
--   throttle                            a 429: backoff level + 1 (at most MAX_LEVEL), backoff
--                                       of BASE * 2^(level-1) s, at most MAX s, from now
--   success                             end the backoff and reset its level
--
-- Returns {now_ms, block_until_ms, backoff_level, backoff_until_ms} after the call (0: none).
--
-- No call shortens the key's life (PEXPIREAT NX then GT); it lives to the latest of now plus
-- settings_ttl_ms and the end of its block or backoff, plus a second.

local BASE, MAX, MAX_LEVEL = 60, 600, 5

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local verb = ARGV[2]
local ends = now

if verb == 'caps' then
  for i, field in ipairs({'hour_cap', 'day_cap'}) do
    local v = ARGV[2 + i]
    if v == nil then return redis.error_reply('provider.lua: malformed arguments') end
    if v == '' then
      redis.call('HDEL', KEYS[1], field)
    else
      redis.call('HSET', KEYS[1], field, v)
    end
  end
elseif verb == 'exhaust' then
  redis.call('HSET', KEYS[1], 'xh', math.floor(now / 3600000), 'xd', math.floor(now / 86400000))
elseif verb == 'block' then
  local untl = tonumber(ARGV[3])
  if not untl or ARGV[4] == nil then
    return redis.error_reply('provider.lua: malformed arguments')
  end
  local held = tonumber(redis.call('HGET', KEYS[1], 'block_until')) or 0
  if untl > now and (held <= now or untl > held) then
    redis.call('HSET', KEYS[1], 'block_until', string.format('%.0f', untl), 'block_reason', ARGV[4])
  end
elseif verb == 'unblock' then
  redis.call('HDEL', KEYS[1], 'block_until', 'block_reason', 'backoff_level', 'backoff_until')
elseif verb == 'throttle' then
  local level = math.min((tonumber(redis.call('HGET', KEYS[1], 'backoff_level')) or 0) + 1,
    MAX_LEVEL)
  local secs = math.min(BASE * 2 ^ (level - 1), MAX)
  redis.call('HSET', KEYS[1], 'backoff_level', level,
    'backoff_until', string.format('%.0f', now + secs * 1000))
elseif verb == 'success' then
  redis.call('HDEL', KEYS[1], 'backoff_level', 'backoff_until')
else
  return redis.error_reply('provider.lua: unknown verb')
end

local state = redis.call('HMGET', KEYS[1], 'block_until', 'backoff_level', 'backoff_until')
local block, level, backoff = tonumber(state[1]) or 0, tonumber(state[2]) or 0,
  tonumber(state[3]) or 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  ends = math.max(now + tonumber(ARGV[1]), block, backoff) + 1000
  local text = string.format('%.0f', ends)
  redis.call('PEXPIREAT', KEYS[1], text, 'NX')
  redis.call('PEXPIREAT', KEYS[1], text, 'GT')
end
return {now, block, level, backoff}
