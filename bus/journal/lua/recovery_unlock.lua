-- recovery_unlock.lua: let go of the lost-task recovery lock (lost.py, recovery_unlock), only our own:
-- not one another worker took after ours expired. No move.
--
-- KEYS[1]  bus:recovery:lock
-- ARGV[1]  its holder as we took it
-- Returns 1 when it was ours and is gone, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
