-- window.lua: read one page of the events of one model inside its window, at the server's time.
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:limit   string present while the model is subscription-limited
-- ARGV[1]  window_ms
-- ARGV[2]  after_score   '' for the first page (from now - window); else the score of the
--                        last member of the previous page
-- ARGV[3]  after_member  that member (the cursor is the pair: ties are paged too)
-- ARGV[4]  page          the most members a page holds
-- ARGV[5]  budget        the most bytes of members a page holds (always at least one member)
--
-- Returns {now_ms, members, limit_pttl, more, restarted}: members = flat member, score list,
-- oldest first, from the member ranked after the cursor (ZRANK); more = 1 while members are
-- left after the page. When the cursor's member is gone (trimmed meanwhile: trims remove the
-- oldest ranks), the page starts at the first member scored at or after the cursor's score,
-- and restarted = 1: the reader drops the members of that score it already has.
-- Reads only; at most `page` members and `budget` bytes of them a call, whatever the ties.

-- #include steps.lua

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local start, restarted = nil, 0
if ARGV[2] == '' then
  start = redis.call('ZCOUNT', KEYS[1], '-inf', string.format('%.0f', now - tonumber(ARGV[1])))
else
  local rank = redis.call('ZRANK', KEYS[1], ARGV[3])
  if rank then
    start = rank + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[2])
    restarted = 1
  end
end
local card = redis.call('ZCOUNT', KEYS[1], '-inf', '+inf')
local members = {}
local taken = walk(false, start, card - 1, tonumber(ARGV[4]), tonumber(ARGV[5]),
  function(member, score)
    members[#members + 1] = member
    members[#members + 1] = score
  end)
local more = start + taken < card and 1 or 0
-- KEYS[2]'s time left by this script's clock (see snapshot.lua's limit_left)
local at = redis.call('PEXPIRETIME', KEYS[2])
return {now, members, (at < 0 and at) or (at > now and at - now) or -2, more, restarted}
