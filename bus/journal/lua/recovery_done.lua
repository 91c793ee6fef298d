-- recovery_done.lua: note when a lost-task recovery that ran to its end began (lost.py, recovery_done),
-- keeping the latest start only: two recoveries may end out of order. No move.
--
-- KEYS[1]  bus:recovery:done
-- ARGV[1]  when this recovery began (Redis's clock)
-- Returns 1.
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > last then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
