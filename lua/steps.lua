-- steps.lua: not a script, a library. The loader writes it into window.lua in place of its line
-- '-- #include steps.lua', so that it reads members by rank in steps bounded by count AND
-- bytes, whatever ties or member sizes the set holds (a
-- ZRANGEBYSCORE ... LIMIT step is bounded in members only, and a step that must end on a
-- score boundary is not bounded at all when thousands of members share one millisecond).
--
-- Every function reads KEYS[1], the script's events key; the set's size is ZCOUNT -inf +inf
-- (as cheap as ZCARD, and a command deploy/users.acl's reader has). Ranks only: members are never
-- compared with Lua's '<' (Redis sets the locale's collation, so strcoll order is not the
-- sorted set's byte order).

local SUB = 64  -- members fetched a command: past a budget, at most this many are read in vain

-- Call fn(member, score) on the members ranked first..last (ZRANGE's ranks, or ZREVRANGE's
-- when `rev`), in that order, until fn returns true (that member is then not taken): at most
-- `count` members and, after the first, no more than `budget` bytes of members in all.
-- Returns how many it took.
local function walk(rev, first, last, count, budget, fn)
  local taken, bytes = 0, 0
  while taken < count and first + taken <= last do
    local from = first + taken
    local upto = math.min(last, from + math.min(SUB, count - taken) - 1)
    local got
    if rev then
      got = redis.call('ZREVRANGE', KEYS[1], from, upto, 'WITHSCORES')
    else
      got = redis.call('ZRANGE', KEYS[1], from, upto, 'WITHSCORES')
    end
    if #got == 0 then return taken end
    for j = 1, #got, 2 do
      bytes = bytes + #got[j]
      if (taken > 0 and bytes > budget) or fn(got[j], got[j + 1]) then return taken end
      taken = taken + 1
    end
  end
  return taken
end
