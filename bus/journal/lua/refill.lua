-- refill.lua: a task of the route starts, or the mover finds pending events with no message coming
-- (ARGV[4] = 'if-idle'): the next group goes into a message (lifecycle: group, group.lua) and the
-- filling flag stays; nothing pending clears the flag, so the next accept queues its own message at once.
--
-- KEYS[1]  bus:pending:<route>   KEYS[2]  bus:filling:<route>   KEYS[3]  bus.<route> (queue)
-- KEYS[4]  bus:template:<digest>, the route's task message template (journal/templates.py)
-- ARGV[1]  group size  ARGV[2]  how many events argsrepr shows
-- ARGV[3]  the flag's lifetime in ms   ARGV[4]  'if-idle' or 'on-start'
-- Returns 1 when a message was queued, else 0. A template key gone refuses (BUSTEMPLATE <key>) before
-- anything is written: the caller stores the template and calls again.
if ARGV[4] == 'if-idle' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local template = redis.call('GET', KEYS[4])
if not template then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[4] .. TEMPLATE_GONE) end
if take_group(KEYS[1], KEYS[3], template, tonumber(ARGV[1]), tonumber(ARGV[2])) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
