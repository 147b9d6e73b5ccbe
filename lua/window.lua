-- window.lua: read one page of the events of one model inside its window, at the server's time.
--
-- KEYS[1]  <ns>:{<model>}:events  sorted set of the model's events (score: completed_at, ms)
-- KEYS[2]  <ns>:{<model>}:limit   string present while the model is subscription-limited
-- ARGV[1]  window_ms
-- ARGV[2]  after   '' for the first page (from now - window); else the page's lower bound,
--                  exclusive, as the previous reply's `after` gave it
-- ARGV[3]  page    how many members a page holds (more when the last ones share a score)
--
-- Returns {now_ms, members, limit_pttl, after}: members = those scored after the lower bound,
-- oldest first, as a flat member, score list; after = the lower bound of the next page, or ''
-- after the last one. Reads only; at most `page` members (and their score's ties) a call.

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local from = ARGV[2]
if from == '' then from = string.format('%.0f', now - tonumber(ARGV[1])) end
local page = tonumber(ARGV[3])
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. from, '+inf', 'WITHSCORES',
  'LIMIT', 0, page)
local after = ''
if #members == 2 * page then
  after = members[#members]
  local kept = {}
  for j = 1, #members, 2 do
    if members[j + 1] ~= after then
      kept[#kept + 1] = members[j]
      kept[#kept + 1] = members[j + 1]
    end
  end
  for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], after, after, 'WITHSCORES')) do
    kept[#kept + 1] = m
  end
  members = kept
end
return {now, members, redis.call('PTTL', KEYS[2]), after}
