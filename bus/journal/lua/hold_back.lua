-- hold_back.lua: park waiting events behind their endpoint's open breaker, without an attempt
-- (lifecycle: hold_back): status retrying, no message named, in the endpoint's parked set until
-- the breaker closes (breakers.py). A breaker that closed since the caller looked puts them on the
-- route's retry schedule instead, due at once. A task holds back all of its group's events of one
-- endpoint in one call: a backlog behind a down endpoint was one script per event (issue 22).
--
-- KEYS[1]  bus:retry:<route>                 KEYS[2]  bus:breaker:<route>:<endpoint>
-- KEYS[3]  bus:parked:<route>:<endpoint>     KEYS[4]  bus:breakers:<route>  (the route's open breakers)
-- KEYS[5..] bus:event:<id> of each id, in ARGV's order
-- ARGV[1]  route   ARGV[2]  reason (the records' `last`)
-- ARGV[3]  now: their score in the parked set, and when they are due if the breaker closed meanwhile
-- ARGV[4]  the endpoint's digest   ARGV[5]  the task holding them back ('' names none)
-- ARGV[6..] the events' ids
-- Returns per id 'held', 'due', or why nothing was written for it: 'gone', the status it is in when
-- the table has no move from it (delivered, dead), or 'superseded' (another copy of the message, or
-- another task, moved it since the caller loaded it).
local open_until = redis.call('HGET', KEYS[2], 'open_until')
local moved, held, due = {}, false, false
for i = 6, #ARGV do
  local id = ARGV[i]
  local refused = to_retrying(KEYS[i - 1], id, ARGV[1], ARGV[2], ARGV[5])
  if refused then
    moved[#moved + 1] = refused
  elseif open_until then
    park_behind(KEYS[i - 1], id, KEYS[1], KEYS[3], ARGV[4], ARGV[3])
    moved[#moved + 1] = 'held'
    held = true
  else
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    moved[#moved + 1] = 'due'
    due = true
  end
end
if held then
  redis.call('ZADD', KEYS[4], 'NX', open_until, ARGV[4])
  wake_mover(ARGV[1], open_until)  -- the mover lets the probe out when it half-opens
end
if due then wake_mover(ARGV[1], ARGV[3]) end
return moved
