-- Sluice's limiter in Redis: one call decides a whole claimed batch, atomically.
-- The same algorithm as sluice.flow.limits.evaluate (the Python side runs it against the
-- store); the two are held to one test suite.
--
-- ARGV[1]: JSON {"r": requests, "g": refunds}; a request is {"c": [check, ...]}, a
--   refund {"c": check, "at": when its uses were taken, "n": how many} (given back
--   first); a check is
--   {"k": key, "t": "b"|"n"|"c", "rate", "burst", "limit", "low", "urgent", "w": window,
--    "a": anchor (fixed windows; absent: sliding), "cd", "q": quota?, "h": holds?,
--    "m": the message's marker cell (absent: none)}
-- ARGV[2]: key prefix.
-- ARGV[3]: the time to judge by, in Unix seconds; empty: Redis's own clock.
-- Returns JSON {"now": t, "d": [[ok, retry_at, check_index], ...], "e": [[key, t], ...],
--               (times as text, to the last digit)
--               "x": [[key, request_index], ...]} (x: the first hold of a cap's window).
-- Each cell is a hash {v = value, s = stamp} with an absolute expiry.

local LOG_MAX = 16   -- sluice.flow.limits.LOG_MAX
local SLICES = 24    -- sluice.flow.limits.SLICES

local payload = cjson.decode(ARGV[1])
local reqs, refunds = payload.r, payload.g
local prefix = ARGV[2]
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local cache, dirty = {}, {}
local function get(key)
  local cell = cache[key]
  if cell == nil then
    local v = redis.call('HMGET', prefix .. key, 'v', 's')
    if v[1] then
      cell = {tonumber(v[1]), tonumber(v[2])}
    else
      cell = false
    end
    cache[key] = cell
  end
  if cell and cell[2] < 0 then return false end
  return cell
end
local function put(key, value, stamp, expires)
  cache[key] = {value, stamp}
  dirty[key] = expires
end

local function same(a, b) return math.abs(a - b) < 1e-6 end
local function fixed(c) return c.a ~= nil and c.a ~= cjson.null end
local function window_start(c, t)
  t = t or now
  return c.a + math.floor((t - c.a) / c.w) * c.w
end

-- The cells a count keeps its uses in (see sluice.flow.limits.slot_keys).
local function slot_keys(c)
  local keys = {}
  if fixed(c) then
    keys[1] = c.k
  elseif c.limit <= LOG_MAX then
    for i = 0, c.limit - 1 do keys[#keys + 1] = c.k .. '#l' .. i end
  else
    for i = 0, SLICES do keys[#keys + 1] = c.k .. '#s' .. i end
  end
  return keys
end

-- {leaves_window_at, how_many} of every use a count sees now: a fixed window's count,
-- or the cells of a sliding one (one use, or one slice: how many, the latest when).
local function uses(c)
  local out = {}
  if fixed(c) then
    local start = window_start(c)
    local cell = get(c.k)
    if cell and same(cell[2], start) and cell[1] > 0 then
      out[1] = {start + c.w, cell[1]}
    end
    return out
  end
  for _, key in ipairs(slot_keys(c)) do
    local cell = get(key)
    if cell and cell[1] > 0 and now - cell[2] < c.w then
      out[#out + 1] = {cell[2] + c.w, cell[1]}
    end
  end
  return out
end

local function total(used)
  local n = 0
  for _, u in ipairs(used) do n = n + u[2] end
  return n
end

local function frees_at(used, allowed, c)
  local left = total(used)
  table.sort(used, function(x, y) return x[1] < y[1] end)
  for _, u in ipairs(used) do
    left = left - u[2]
    if left < allowed then return u[1] end
  end
  if #used > 0 then return used[#used][1] end
  return now + c.w
end

local function take(c, count)
  if fixed(c) then
    local start = window_start(c)
    put(c.k, count + 1, start, start + c.w + 60)
    return
  end
  if c.limit <= LOG_MAX then
    for _, key in ipairs(slot_keys(c)) do
      local cell = get(key)
      if not cell or cell[1] <= 0 or now - cell[2] >= c.w then
        put(key, 1, now, now + c.w + 60)
        return
      end
    end
    return
  end
  -- the slice of now; its cell last held the slice SLICES + 1 before, all gone by now
  local length = c.w / SLICES
  local index = math.floor(now / length)
  local key = c.k .. '#s' .. string.format('%d', index % (SLICES + 1))
  local cell = get(key)
  if cell and math.floor(cell[2] / length) == index then
    put(key, cell[1] + 1, math.max(cell[2], now), now + c.w + 60)
  else
    put(key, 1, now, now + c.w + 60)
  end
end

-- Was a once-per-window mark made in the window in force now?
local function fresh(c, mark)
  if not mark then return false end
  if fixed(c) then return same(mark[2], window_start(c)) end
  return now - mark[2] < c.w
end
local function mark(c, key, value)
  local start = now
  if fixed(c) then start = window_start(c) end
  put(key, value, start, start + c.w + 60)
end

-- Did this very message pass the check on an earlier try, and does that still hold
-- (its use still in the window, its cooldown still running)?
local function marked(c)
  if not c.m then return false end
  local mk = get(c.m)
  if not mk then return false end
  if c.t == 'c' then return now - mk[2] < c.cd end
  if fixed(c) then return same(window_start(c, mk[2]), window_start(c)) end
  return now - mk[2] < c.w
end

-- Undo the n uses a check took at `at`, as far as they still count: never into a window
-- that has ended, never below zero, never a bucket over its burst
-- (sluice.flow.limits.give_back).
local function give_back(c, at, n)
  if c.t == 'b' then
    local cell = get(c.k)
    if cell then
      local tokens = math.min(c.burst, cell[1] + math.max(0, now - cell[2]) * c.rate)
      put(c.k, math.min(c.burst, tokens + n), now, now + c.burst / c.rate + 60)
    end
    return
  end
  if c.t ~= 'n' then return end
  if fixed(c) then
    local start = window_start(c)
    local cell = get(c.k)
    if same(window_start(c, at), start) and cell and same(cell[2], start) then
      put(c.k, math.max(0, cell[1] - n), cell[2], start + c.w + 60)
    end
    return
  end
  if now - at >= c.w then return end
  if c.limit <= LOG_MAX then
    for _, key in ipairs(slot_keys(c)) do
      local cell = get(key)
      if n > 0 and cell and math.abs(cell[2] - at) < 1e-7 then
        put(key, 0, -1, now + 60)
        n = n - 1
      end
    end
    return
  end
  local length = c.w / SLICES
  local index = math.floor(at / length)
  local key = c.k .. '#s' .. string.format('%d', index % (SLICES + 1))
  local cell = get(key)
  if cell and math.floor(cell[2] / length) == index then
    put(key, math.max(0, cell[1] - n), cell[2], cell[2] + c.w + 60)
  end
end

for _, g in ipairs(refunds) do give_back(g.c, g.at, g.n) end

local decisions, events, trips = {}, {}, {}
local thresholds = {0.70, 0.85, 0.95}
local counted = {}

for r, req in ipairs(reqs) do
  local failed, retry = 0, now
  local levels = {}
  -- checks this very message passed on an earlier try: a retry is not one more message
  local passed = {}
  for i, c in ipairs(req.c) do passed[i] = marked(c) end
  for i, c in ipairs(req.c) do
    local cell = get(c.k)
    if passed[i] then
      -- passes as itself
    elseif c.t == 'b' then
      local tokens = c.burst
      if cell then
        tokens = math.min(c.burst, cell[1] + math.max(0, now - cell[2]) * c.rate)
      end
      levels[c.k] = tokens
      if tokens < 1 then
        -- the bucket's next free slot, shared: refusals queue up behind each other
        local nk = c.k .. '#next'
        local slots = get(nk)
        local last = -1
        if slots then last = slots[1] end
        local slot = math.max(now + (1 - tokens) / c.rate, last + 1 / c.rate)
        put(nk, slot, now, slot + 60)
        retry = math.max(retry, slot)
        failed = i
        break
      end
    elseif c.t == 'n' then
      if counted[c.k] == nil then counted[c.k] = total(uses(c)) end
      local allowed = c.low
      if c.urgent then allowed = c.limit end
      if counted[c.k] >= allowed then
        retry = math.max(retry, frees_at(uses(c), allowed, c))
        failed = i
        break
      end
    elseif c.t == 'c' then
      if cell and now - cell[1] < c.cd then
        retry = math.max(retry, cell[1] + c.cd)
        failed = i
        break
      end
    end
  end
  if failed > 0 then
    -- as text: cjson keeps only 14 digits, a tenth of a millisecond of a Unix time
    table.insert(decisions, {0, string.format('%.17g', retry), failed})
    local c = req.c[failed]
    if c.h then
      -- the first message a holding cap refuses in this window is reported once
      local tk = c.k .. '#trip'
      if not fresh(c, get(tk)) then
        mark(c, tk, 1)
        table.insert(trips, {c.k, r})
      end
    end
  else
    for i, c in ipairs(req.c) do
      if passed[i] then
        -- counted on an earlier try
      elseif c.t == 'b' then
        put(c.k, levels[c.k] - 1, now, now + c.burst / c.rate + 60)
      elseif c.t == 'n' then
        local before = counted[c.k]
        take(c, before)
        counted[c.k] = before + 1
        if c.q then
          -- each threshold once per window, however often the count falls and rises
          local tk = c.k .. '#t'
          local reported = 0
          local m = get(tk)
          if fresh(c, m) then reported = m[1] end
          local highest = reported
          for _, th in ipairs(thresholds) do
            if before < th * c.limit and th * c.limit <= before + 1 and th > reported then
              table.insert(events, {c.k, th})
              highest = th
            end
          end
          if highest > reported then mark(c, tk, highest) end
        end
      elseif c.t == 'c' then
        put(c.k, now, now, now + c.cd + 60)
      end
      if c.m and not passed[i] then put(c.m, 1, now, now + c.w + c.cd + 60) end
    end
    table.insert(decisions, {1, 0, 0})
  end
end

for key, expires in pairs(dirty) do
  local cell = cache[key]
  redis.call('HSET', prefix .. key, 'v', string.format('%.17g', cell[1]),
             's', string.format('%.17g', cell[2]))
  redis.call('PEXPIREAT', prefix .. key, math.floor(expires * 1000))
end

return cjson.encode({now = string.format('%.17g', now), d = decisions, e = events, x = trips})
