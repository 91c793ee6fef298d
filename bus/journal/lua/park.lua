-- park.lua: hold a waiting event off until a time without an attempt (lifecycle: park): status
-- retrying, on the route's retry schedule, no message named (the schedule makes the next one).
--
-- KEYS[1]  bus:event:<id>       the record
-- KEYS[2]  bus:retry:<route>    the route's retry schedule
-- ARGV[1]  id      ARGV[2]  route      ARGV[3]  until (the schedule's score)
-- ARGV[4]  reason (the record's `last`)
-- ARGV[5]  the task parking it ('' names none)
-- Returns 'ok', or why nothing was written: 'gone', the status the event is in when the table has
-- no park from it (delivered, dead), or 'superseded' (the record names another task, or none: an
-- attempt or a park already came after the caller loaded it).
local refused = to_retrying(KEYS[1], ARGV[1], ARGV[2], ARGV[4], ARGV[5])
if refused then return refused end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
wake_mover(ARGV[2], ARGV[3])
return 'ok'
