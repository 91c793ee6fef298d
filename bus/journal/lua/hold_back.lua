-- hold_back.lua: park a waiting event behind its endpoint's open breaker, without an attempt
-- (lifecycle: hold_back): status retrying, no message named, in the endpoint's parked set until
-- the breaker closes (breakers.py). A breaker that closed since the caller looked puts the event
-- on the route's retry schedule instead, due at once.
--
-- KEYS[1]  bus:event:<id>                    KEYS[2]  bus:retry:<route>
-- KEYS[3]  bus:breaker:<route>:<endpoint>    KEYS[4]  bus:parked:<route>:<endpoint>
-- KEYS[5]  bus:breakers:<route>              (the route's open breakers)
-- ARGV[1]  id   ARGV[2]  route   ARGV[3]  reason (the record's `last`)
-- ARGV[4]  when it is due if the breaker closed meanwhile   ARGV[5]  the endpoint's digest
-- ARGV[6]  now (its score in the parked set)   ARGV[7]  the task holding it back ('' names none)
-- Returns 'held', 'due', or why nothing was written: 'gone', the status the event is in when the
-- table has no move from it (delivered, dead), or 'superseded' (another copy of the message, or
-- another task, moved it since the caller loaded it).
local id = ARGV[1]
local refused = to_retrying(KEYS[1], id, ARGV[2], ARGV[3], ARGV[7])
if refused then return refused end
local open_until = redis.call('HGET', KEYS[3], 'open_until')
if open_until then
  redis.call('ZADD', KEYS[4], ARGV[6], id)
  redis.call('ZREM', KEYS[2], id)  -- an ordered route's event a task took holds a lease there (lane.lua)
  redis.call('HSET', KEYS[1], 'parked', ARGV[5])
  redis.call('ZADD', KEYS[5], 'NX', open_until, ARGV[5])
  wake_mover(ARGV[2], open_until)  -- the mover lets the probe out when it half-opens
  return 'held'
end
redis.call('ZADD', KEYS[2], ARGV[4], id)
wake_mover(ARGV[2], ARGV[4])
return 'due'
