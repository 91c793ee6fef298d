-- sleep.lua: the retry mover (worker/scheduler.py) moved nothing and goes to sleep until the earliest
-- retry, breaker or refill of its routes is due, or `latest`, whichever comes first. In the same step as
-- that read it leaves its wake-up time in each route's sleeps mark, so a script that schedules anything
-- earlier afterwards (wake_mover, scripts.py) pushes a token to the route's wake list, which the mover
-- BLPOPs; and its lease on each route lasts the sleep and a margin, so no other mover takes the route
-- meanwhile and a dead one's lapses soon after what it waited for was due. No move: it reads.
--
-- KEYS     per route: bus:mover:<route>, bus:retry:<route>, bus:breakers:<route>, bus:pending:<route>,
--          bus:filling:<route>, bus:mover:<route>:sleeps, bus:wake:<route>
-- ARGV[1]  the mover's id   ARGV[2]  now   ARGV[3]  the latest wake-up   ARGV[4]  the lease's margin (ms)
-- ARGV[5]  seconds until a pending list with no message coming (no filling flag) is looked at again
-- Returns {the wake-up time (a string: Redis cuts a Lua number to an integer), the 1-based numbers of the
-- routes it sleeps on: those this mover holds}.
local me, now, wake_at = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local margin, refill = tonumber(ARGV[4]), tonumber(ARGV[5])
local held = {}
for r = 1, #KEYS / 7 do
  local k = 7 * (r - 1)
  if redis.call('GET', KEYS[k + 1]) == me then
    held[#held + 1] = r
    for s = 2, 3 do
      local first = redis.call('ZRANGE', KEYS[k + s], 0, 0, 'WITHSCORES')
      if first[2] then wake_at = math.min(wake_at, tonumber(first[2])) end
    end
    -- A message is coming for pending events while the flag lives (grouping.py); when it expires
    -- the mover's refill makes one.
    if redis.call('LLEN', KEYS[k + 4]) > 0 then
      local left = redis.call('PTTL', KEYS[k + 5])
      wake_at = math.min(wake_at, now + (left > 0 and left / 1000 or refill))
    end
  end
end
local ms = math.max(0, math.ceil((wake_at - now) * 1000)) + margin
for _, r in ipairs(held) do
  local k = 7 * (r - 1)
  redis.call('PEXPIRE', KEYS[k + 1], ms)
  redis.call('SET', KEYS[k + 6], string.format('%.6f', wake_at), 'PX', ms)
  redis.call('DEL', KEYS[k + 7])  -- tokens of an earlier wait: what they announced is in the read above
end
return {string.format('%.6f', wake_at), held}
