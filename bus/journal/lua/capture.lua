-- capture.lua: journal a request bus proxy captured, as queued, before the proxy forwards it
-- (lifecycle: capture). It goes on no pending list: the proxy is its first sending; its record
-- names no task (''), so no stray message sends it. Should the proxy die before it records the
-- answer, lost-task recovery sends it again with the same id: a repeat, never a loss.
--
-- KEYS[1]  bus:event:<id>   KEYS[2]  bus:status:queued   KEYS[3]  bus:route:<route>:queued
-- KEYS[4]  bus:counters
-- ARGV[1]  id   ARGV[2]  tag   ARGV[3]  route   ARGV[4]  body   ARGV[5]  headers
-- ARGV[6]  request (captured.Request's JSON)   ARGV[7]  received
-- ARGV[8]  the accepted counter's field   ARGV[9]  the uncaptured counter's field
-- ARGV[10] how many requests this proxy forwarded uncaptured since it last could tell Redis ('0': none)
-- Returns 1, or 0 when a record with that id exists already (nothing written: ids are fresh).
local id, received = ARGV[1], ARGV[7]
if ARGV[10] ~= '0' then redis.call('HINCRBY', KEYS[4], ARGV[9], ARGV[10]) end
if not may(redis.call('HGET', KEYS[1], 'status') or nil, QUEUED) then return 0 end
redis.call('HSET', KEYS[1], 'tag', ARGV[2], 'route', ARGV[3], 'body', ARGV[4], 'headers', ARGV[5],
           'request', ARGV[6], 'received', received, 'status', QUEUED, 'task', '')
redis.call('ZADD', KEYS[2], received, id)
redis.call('ZADD', KEYS[3], received, id)
redis.call('HINCRBY', KEYS[4], ARGV[8], 1)
return 1
