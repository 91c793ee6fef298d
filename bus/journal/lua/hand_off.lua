-- hand_off.lua: a task with no time left queues the rest of its group as a new message that takes
-- the events over (lifecycle: hand_off; statuses unchanged, the new message named).
--
-- KEYS[1]  bus.<route>          the route's Celery queue
-- ARGV[1]  the new message      ARGV[2]  its task id
-- ARGV[3]  the task handing off ('' names none)      ARGV[4..]  the events' ids
-- Only events still waiting and still the handing task's change hands; the message is queued
-- when at least one did. Returns how many did.
local mine = {}
for i = 4, #ARGV do
  local status, task = unpack(redis.call('HMGET', EVENT_KEY .. ARGV[i], 'status', 'task'))
  if status and owned(task, ARGV[3]) then mine[#mine + 1] = ARGV[i] end
end
local named = own(mine, ARGV[2])
if named > 0 then redis.call('LPUSH', KEYS[1], ARGV[1]) end
return named
