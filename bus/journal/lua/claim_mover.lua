-- claim_mover.lua: one retry mover per route at a time (worker/scheduler.py). The lease is its holder's
-- while it lasts (sleep.lua stretches it over a sleep of up to 10 s), and passes to another mover as
-- soon as the worker it names has lost its own lease (bus:lease:<worker>, renewed every second by that
-- worker's lease thread, leases.py): a SIGKILLed worker's mover keeps no route for the rest of its sleep.
-- No move: only the lease.
--
-- KEYS[1]  bus:mover:<route>
-- ARGV[1]  this mover: its worker's name (leases.worker_name)   ARGV[2]  the lease's ms when taken
-- Returns 1 when this mover holds the lease, else minus the ms until the holder's worker lease lapses
-- unless renewed: when to look again.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return 1 end
if holder then
  local left = redis.call('PTTL', worker_lease(holder))
  if left ~= -2 then return -math.max(left, 1) end  -- -1: a lease with no expiry, looked at again soon
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
