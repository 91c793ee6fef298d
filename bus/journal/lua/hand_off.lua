-- hand_off.lua: a task with no time left queues the rest of its group as a new message that takes
-- the events over (lifecycle: hand_off; statuses unchanged, the new message named).
--
-- KEYS[1]  bus.<route>          the route's Celery queue
-- KEYS[2]  bus:template:<digest>  the route's message template (journal/templates.py)
-- ARGV[1..3]  the new message's body, argsrepr and kwargsrepr (messages.Outgoing.filling)
-- ARGV[4]  its task id   ARGV[5]  the task handing off ('' names none)   ARGV[6..]  the events' ids
-- Only events still waiting and still the handing task's change hands; the message is queued
-- when at least one did. Returns how many did; a template key gone refuses (BUSTEMPLATE <key>)
-- before anything changes hands.
local template = redis.call('GET', KEYS[2])
if not template then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[2] .. TEMPLATE_GONE) end
local mine = {}
for i = 6, #ARGV do
  local status, task = unpack(redis.call('HMGET', EVENT_KEY .. ARGV[i], 'status', 'task'))
  if status and owned(task, ARGV[5]) then mine[#mine + 1] = ARGV[i] end
end
local named = own(mine, ARGV[4])
if named > 0 then redis.call('LPUSH', KEYS[1], fill(template, ARGV[4], ARGV[1], ARGV[2], ARGV[3])) end
return named
