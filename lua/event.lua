-- event.lua: not a script, a library. The loader writes it into record.lua, snapshot.lua and
-- session.lua in place of their line '-- #include event.lua', so that the three read a member
-- the same way: what one event adds to the totals when stored is what leaves when it goes.
--
-- It reads the one msgpack shape this package writes (version 1):
-- [1, event_id, session_id, completed_at_us, latency_ms, success,
--  total, input, output, reasoning, cache_read, cache_write, cost_usd, error]
-- (latency_ms nil: not measured)
-- and needs FIELDS (the totals' names, in order) defined before it.
--
-- effect(member) returns nil for a member this package did not write, else a table:
--   c        what the member adds to each total, in FIELDS order
--   bucket   the latency sketch's bucket of a successful completion (nil for a failure, or a
--            latency not measured)
--   session  the session id, and u = {1, input, output, total, cost_nusd}: its session usage
--   id       the event id (one event id is one event per model: record.lua's id index)

local byte = string.byte
local N = #FIELDS

local function uint(s, pos, n)
  local v = 0
  for i = pos, pos + n - 1 do v = v * 256 + byte(s, i) end
  return v
end

-- One value and the next position. Strings are skipped (nil) unless `keep`.
local function read(s, pos, keep)
  local b = byte(s, pos)
  if b == nil then error('truncated') end
  if b <= 0x7f then return b, pos + 1 end
  local len, at = nil, nil
  if b >= 0xa0 and b <= 0xbf then len, at = b - 0xa0, pos + 1
  elseif b == 0xd9 then len, at = uint(s, pos + 1, 1), pos + 2
  elseif b == 0xda then len, at = uint(s, pos + 1, 2), pos + 3
  elseif b == 0xdb then len, at = uint(s, pos + 1, 4), pos + 5 end
  if len then
    if at + len - 1 > #s then error('truncated') end
    return keep and string.sub(s, at, at + len - 1) or nil, at + len
  end
  if b == 0xc0 then return nil, pos + 1 end
  if b == 0xc2 then return false, pos + 1 end
  if b == 0xc3 then return true, pos + 1 end
  if b == 0xcc then return uint(s, pos + 1, 1), pos + 2 end
  if b == 0xcd then return uint(s, pos + 1, 2), pos + 3 end
  if b == 0xce then return uint(s, pos + 1, 4), pos + 5 end
  if b == 0xcf then return uint(s, pos + 1, 8), pos + 9 end
  if b >= 0xe0 then return b - 256, pos + 1 end
  if b >= 0xd0 and b <= 0xd3 then
    local n = 2 ^ (b - 0xd0)
    local v = uint(s, pos + 1, n)
    if v >= 2 ^ (8 * n - 1) then v = v - 2 ^ (8 * n) end
    return v, pos + 1 + n
  end
  if b == 0xcb then
    local hi, lo = uint(s, pos + 1, 4), uint(s, pos + 5, 4)
    local sign = hi >= 0x80000000 and -1 or 1
    local exp = math.floor(hi / 0x100000) % 0x800
    local frac = (hi % 0x100000) * 4294967296 + lo
    local v
    if exp == 0 then v = frac * 2 ^ -1074
    elseif exp == 0x7ff then error('not finite')
    else v = (1 + frac / 4503599627370496) * 2 ^ (exp - 1023) end
    return sign * v, pos + 9
  end
  error('unexpected msgpack type')
end

-- The latency sketch's bucket (redis_telemetry/core/sketch.py): one per value below 128 ms,
-- then 64 per power of two. Integer arithmetic only, so it matches the Python side exactly.
local function bucket(x)
  if x < 128 then return x end
  local k = math.floor(math.log(x) / math.log(2))
  local p = 2 ^ k
  while p > x do k = k - 1; p = p / 2 end
  while p * 2 <= x do k = k + 1; p = p * 2 end
  return 128 + (k - 7) * 64 + math.floor((x - p) / (p / 64))
end

local function decoded(member)
  if byte(member, 1) ~= 0x9e then error('not a 14-element array') end
  local v = {}
  local pos = 2
  for i = 1, 14 do v[i], pos = read(member, pos, i == 2 or i == 3) end
  if v[1] ~= 1 or pos ~= #member + 1 or type(v[2]) ~= 'string' or type(v[3]) ~= 'string' then
    error('not a version-1 event')
  end
  for _, i in ipairs({7, 8, 9, 10, 11, 12, 13}) do
    if type(v[i]) ~= 'number' or v[i] < 0 then error('not a count') end
  end
  if v[5] ~= nil and (type(v[5]) ~= 'number' or v[5] < 0) then error('not a latency') end
  local success = v[6] == true
  local timed = success and v[5] ~= nil
  local cost = math.floor(v[13] * 1e9 + 0.5)
  local named = {
    ok = success and 1 or 0,
    failed = success and 0 or 1,
    latency = timed and v[5] or 0,
    untimed = (success and not timed) and 1 or 0,
    cost_nusd = cost,
    total = v[7], input = v[8], output = v[9], reasoning = v[10],
    cache_read = v[11], cache_write = v[12],
  }
  local c = {}
  for i = 1, N do
    c[i] = named[FIELDS[i]]
    if c[i] == nil then error('no contribution to the total ' .. FIELDS[i]) end
  end
  return {
    c = c,
    bucket = timed and bucket(v[5]) or nil,
    session = v[3],
    u = {1, v[8], v[9], v[7], cost},
    id = v[2],
  }
end

local function effect(member)
  local ok, e = pcall(decoded, member)
  if ok then return e end
  if string.find(e, 'no contribution', 1, true) then error(e) end
  return nil
end
