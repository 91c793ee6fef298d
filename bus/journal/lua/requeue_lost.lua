-- requeue_lost.lua: lost-task recovery queues a copy of the message of a waiting event whose message
-- is nowhere in Redis (lifecycle: requeue_lost; status unchanged, the copy named), at the consuming
-- end of the queue. The lost one, should it come back after all, finds the copy named and leaves it.
--
-- KEYS[1]  bus:event:<id>     KEYS[2]  bus.<route>
-- ARGV[1]  the copy           ARGV[2]  its task id
-- Returns 1, or 0 when the event is no longer waiting (delivered, dead, gone) and nothing was queued.
local status = redis.call('HGET', KEYS[1], 'status')
if not (status and may(status, status)) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'task', ARGV[2])
return 1
