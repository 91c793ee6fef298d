-- renew_and_look.lua: renew this worker's lease, list it, and look at every listed worker's lease: what
-- leases.Watch.tick does every second, one round trip instead of three (docs/performance.md, issue 22).
-- The other workers' lease keys are named from the listing, so they are built here from their prefix
-- (keys.lease_key, passed in ARGV).
--
-- KEYS[1]  bus:workers   KEYS[2]  bus:lease:<worker> (this worker's)
-- ARGV[1]  the worker (host:pid)   ARGV[2]  the lease's lifetime in ms   ARGV[3]  now
-- ARGV[4]  the lease keys' prefix
-- Returns worker, 1 or 0 (its lease held or not), for every listed worker.
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local out = {}
for _, worker in ipairs(redis.call('HKEYS', KEYS[1])) do
  out[#out + 1] = worker
  out[#out + 1] = redis.call('EXISTS', ARGV[4] .. worker)
end
return out
