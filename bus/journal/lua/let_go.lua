-- let_go.lua: a worker that stops gives up its lease on a route's retry schedule, so the next mover
-- (a restarted worker's) takes it at once instead of after the sleep the lease was stretched over
-- (sleep.lua). No move: only the holder's own lease goes.
--
-- KEYS     bus:mover:<route> of each route
-- ARGV[1]  the mover's id
-- Returns how many it gave up.
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then n = n + redis.call('DEL', key) end
end
return n
