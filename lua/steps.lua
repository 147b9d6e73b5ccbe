-- steps.lua: not a script, a library. The loader writes it into window.lua, snapshot.lua and
-- session.lua in place of their line '-- #include steps.lua', so that each reads members by
-- rank in steps bounded by count AND bytes, whatever ties or member sizes the set holds (a
-- ZRANGEBYSCORE ... LIMIT step is bounded in members only, and a step that must end on a
-- score boundary is not bounded at all when thousands of members share one millisecond).
--
-- Every function reads KEYS[1], the script's events key; the set's size is ZCOUNT -inf +inf
-- (as cheap as ZCARD, and a command deploy/users.acl's reader has). Ranks only: members are never
-- compared with Lua's '<' (Redis sets the locale's collation, so strcoll order is not the
-- sorted set's byte order).

local SUB = 64  -- the most members fetched a command

-- Call fn(member, score) on the members ranked first..last (ZRANGE's ranks, or ZREVRANGE's
-- when `rev`; `last` may be math.huge: to the set's end), in that order, until fn returns
-- true (that member is then not taken): at most `count` members and, after the first, no
-- more than `budget` bytes of members in all. Returns how many it took. It fetches `step`
-- members first (8 when nil), then as many as the mean size so far says fit in the budget
-- left (one more, at most SUB): few are fetched in vain.
local function walk(rev, first, last, count, budget, fn, step)
  local taken, bytes = 0, 0
  while taken < count and first + taken <= last do
    local from = first + taken
    local want = step or 8
    if taken > 0 then want = math.floor((budget - bytes) * taken / bytes) + 1 end
    local upto = math.min(last, from + math.min(want, SUB, count - taken) - 1)
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
    if #got < 2 * (upto - from + 1) then return taken end  -- the set ends here
  end
  return taken
end

-- walk() over the members aged at `cutoff` (scored at or before it), oldest first, from rank
-- `first`, or from rank 0 unless `oldest` (the member an earlier call found at rank 0) still
-- is there: trims remove the lowest ranks and nothing is stored at or before a cutoff already
-- passed, so the aged members ranked below `first` are then the same ones an earlier call
-- read. Returns the rank it started from and the cursor left: {} when no member is aged, else
-- {cutoff, next, aged, card, oldest}: the cutoff, the rank to go on from (aged: all read),
-- how many members are aged, how many the set holds, and the oldest member ('' when the
-- walk did not start at 0: the caller has it).
local function walk_aged(cutoff, first, oldest, count, budget, fn)
  local aged = redis.call('ZCOUNT', KEYS[1], '-inf', string.format('%.0f', cutoff))
  if first > aged or (first > 0 and redis.call('ZRANK', KEYS[1], oldest) ~= 0) then
    first = 0
  end
  if aged == 0 then return first, {} end
  local bottom = ''
  local taken = walk(false, first, aged - 1, count, budget, function(member, score)
    if first == 0 and bottom == '' then bottom = member end
    return fn(member, score)
  end)
  return first, {string.format('%.0f', cutoff), first + taken, aged,
    redis.call('ZCOUNT', KEYS[1], '-inf', '+inf'), bottom}
end

-- A read's state after a walk_aged() that left `cursor`: 'aged' while members are left, else
-- 'ok'.
local function aged_state(cursor)
  return (#cursor > 0 and cursor[2] < cursor[3]) and 'aged' or 'ok'
end

-- Sums of non-negative integers kept exact in doubles: add(i, v) adds v to sum i; one about
-- to reach 2^52 is put out first, as a (names[i], value) pair, and starts again. flat()
-- returns the pairs, flat, the sums left included (a name may repeat; zero sums are left out).
local function exact_sums(names)
  local acc, out = {}, {}
  for i = 1, #names do acc[i] = 0 end
  local function put(i)
    out[#out + 1] = names[i]
    out[#out + 1] = string.format('%.0f', acc[i])
    acc[i] = 0
  end
  return {
    add = function(i, v)
      if acc[i] + v >= 2 ^ 52 then put(i) end
      acc[i] = acc[i] + v
    end,
    flat = function()
      for i = 1, #names do
        if acc[i] ~= 0 then put(i) end
      end
      return out
    end,
  }
end
