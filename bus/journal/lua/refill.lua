-- refill.lua: a task of the route starts, or the mover finds pending events with no message coming
-- (ARGV[5] = 'if-idle'): the next group goes into a message (lifecycle: group, group.lua) and the
-- filling flag stays; nothing pending clears the flag, so the next accept queues its own message at once.
--
-- KEYS[1]  bus:pending:<route>   KEYS[2]  bus:filling:<route>   KEYS[3]  bus.<route> (queue)
-- ARGV[1]  the message template  ARGV[2]  group size  ARGV[3]  how many events argsrepr shows
-- ARGV[4]  the flag's lifetime in ms   ARGV[5]  'if-idle' or 'on-start'
-- Returns 1 when a message was queued, else 0.
if ARGV[5] == 'if-idle' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if take_group(KEYS[1], KEYS[3], ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[4])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
