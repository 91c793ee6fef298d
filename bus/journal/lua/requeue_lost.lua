-- requeue_lost.lua: lost-task recovery queues a copy of the message of a waiting event whose message
-- is nowhere in Redis (lifecycle: requeue_lost; status unchanged, the copy named), at the consuming
-- end of the queue. The lost one, should it come back after all, finds the copy named and leaves it.
--
-- KEYS[1]  bus:event:<id>     KEYS[2]  bus.<route>
-- KEYS[3]  bus:template:<digest>  the route's template of redelivered messages (journal/templates.py)
-- ARGV[1..3]  the copy's body, argsrepr and kwargsrepr (messages.Outgoing.filling)   ARGV[4]  its task id
-- Returns 1, or 0 when the event is no longer waiting (delivered, dead, gone) and nothing was queued;
-- a template key gone refuses (BUSTEMPLATE <key>) before anything is written.
local status = redis.call('HGET', KEYS[1], 'status')
if not (status and may(status, status)) then return 0 end
local template = redis.call('GET', KEYS[3])
if not template then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[3] .. TEMPLATE_GONE) end
redis.call('RPUSH', KEYS[2], fill(template, ARGV[4], ARGV[1], ARGV[2], ARGV[3]))
redis.call('HSET', KEYS[1], 'task', ARGV[4])
return 1
