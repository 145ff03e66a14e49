-- Sluice's limiter in Redis: one call decides a whole claimed batch, atomically.
-- The same algorithm as sluice.flow.limits.evaluate (the Python side runs it against the
-- store); the two are held to one test suite.
--
-- ARGV[1]: JSON list of requests, each {"c": [check, ...]}; a check is
--   {"k": key, "t": "b"|"n"|"c", "rate", "burst", "limit", "low", "urgent", "wend", "cd",
--    "q": quota?, "h": holds?}
-- ARGV[2]: key prefix.
-- ARGV[3]: the time to judge by, in Unix seconds; empty: Redis's own clock.
-- Returns JSON {"now": t, "d": [[ok, retry_at, check_index], ...], "e": [[key, t], ...],
--               "x": [[key, request_index], ...]} (x: the first hold of a cap's window).
-- Each cell is a hash {v = value, s = stamp} with an absolute expiry.

local reqs = cjson.decode(ARGV[1])
local prefix = ARGV[2]
local now = tonumber(ARGV[3])
if now == nil then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end

local cache = {}
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
  return cell
end

local decisions, events, trips, dirty = {}, {}, {}, {}
local thresholds = {0.70, 0.85, 0.95}

for r, req in ipairs(reqs) do
  local failed, retry = 0, now
  local levels = {}
  for i, c in ipairs(req.c) do
    local cell = get(c.k)
    if c.t == 'b' then
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
        cache[nk] = {slot, now}
        dirty[nk] = slot + 60
        retry = math.max(retry, slot)
        failed = i
        break
      end
    elseif c.t == 'n' then
      local count = 0
      if cell then count = cell[1] end
      local allowed = c.low
      if c.urgent then allowed = c.limit end
      if count >= allowed then
        retry = math.max(retry, c.wend)
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
    table.insert(decisions, {0, retry, failed})
    local c = req.c[failed]
    if c.h then
      -- the first message a holding cap refuses in this window is reported once
      local tk = c.k .. '#trip'
      if not get(tk) then
        cache[tk] = {1, now}
        dirty[tk] = c.wend + 60
        table.insert(trips, {c.k, r})
      end
    end
  else
    for _, c in ipairs(req.c) do
      local cell = get(c.k)
      if c.t == 'b' then
        cache[c.k] = {levels[c.k] - 1, now}
        dirty[c.k] = now + c.burst / c.rate + 60
      elseif c.t == 'n' then
        local before = 0
        if cell then before = cell[1] end
        cache[c.k] = {before + 1, now}
        dirty[c.k] = c.wend + 60
        if c.q then
          for _, th in ipairs(thresholds) do
            if before < th * c.limit and th * c.limit <= before + 1 then
              table.insert(events, {c.k, th})
            end
          end
        end
      elseif c.t == 'c' then
        cache[c.k] = {now, now}
        dirty[c.k] = now + c.cd + 60
      end
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

return cjson.encode({now = now, d = decisions, e = events, x = trips})
