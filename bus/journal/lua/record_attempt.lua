-- record_attempt.lua: an attempt's record and the event's move to the status its answer decided,
-- in one step (lifecycle: record_attempt). No message sends the event after this one (task '').
--
-- KEYS[1]  bus:event:<id>              the record
-- KEYS[2]  bus:event:<id>:attempts     the attempt log
-- KEYS[3]  bus:event:<id>:copies       copies sent elsewhere (expire with the record)
-- KEYS[4]  bus:retry:<route>           the route's retry schedule
-- KEYS[5]  bus:breaker:<route>:<endpoint>  the breaker of the endpoint the attempt went to
-- KEYS[6]  bus:counters                counters for /metrics
-- KEYS[7]  bus:latency:<route>         accept-to-2xx histogram
-- KEYS[8]  bus:delivered:<route>:<slot> deliveries in the current 10-second slot
-- KEYS[9]  bus:parked:<route>:<endpoint>  events held back behind that breaker (breakers.py)
-- KEYS[10] bus:breakers:<route>        the route's open breakers   KEYS[11] bus:failing:<route>
-- KEYS[12] bus:breaker:<route>:<origin>    the breaker of the endpoint's origin (connect failures)
-- KEYS[13] bus:parked:<route>:<origin>     events held back behind it
-- ARGV[1]  id                 ARGV[2]  route              ARGV[3]  received (the index score)
-- ARGV[4]  attempt JSON       ARGV[5]  new status         ARGV[6]  last result (status code or error)
-- ARGV[7]  retention seconds, or '' to keep the record (not delivered)
-- ARGV[8]  retry time, or '' (not on the schedule)
-- ARGV[9]  '1' closes the endpoint's breaker and its origin's (a non-retryable answer), 'o' the
--          origin's alone (a retryable answer: the host is up, the path is failing), '0' neither; a
--          breaker closed releases what it held back: due at once, on the route's retry schedule
-- ARGV[10] the counter field to bump
-- ARGV[11] latency bucket, or '' (not a delivery)   ARGV[12] seconds   ARGV[13] the slot's time to live
-- ARGV[14] the endpoint's digest   ARGV[15] its origin's digest
-- ARGV[16] a failed probe's breaker, counted before this record: '1' the endpoint's, 'o' its origin's,
--          '' none. While that breaker is open and the retry time (ARGV[8]) comes before it half-opens,
--          the event waits in its parked set instead of on the schedule (as hold_back.lua parks it):
--          released there, its next task would only find the breaker open and park it
-- ARGV[17] now: its score in that parked set
-- ARGV[18..21] an ordered route's message template key (bus:template:<digest>), group size, events
--          shown and filling flag ms, or nothing: a delivered or dead event of a lane lets the lane's
--          next one go (lane.lua)
-- ARGV[22] the task id that takes the lane's next event to send it itself ('' : none)
-- ARGV[23] until when it holds it (its lease on the retry schedule)
-- Returns 'ok' ({'ok <id>', its record as HGETALL gives it} when the task took the lane's next event),
-- or why nothing was written: 'gone' (no record: purged, expired) or the status the
-- event is in when the table has no move from it (delivered, dead: another copy finished it).
-- The task the record names is not checked: the attempt has gone out, whoever holds the event now.
-- Recorded, it makes the record name no task, so a copy recovery queued meanwhile (or the other
-- copy of a restored message) finds '' and leaves the event; refused, that copy would send it again.
local id, route, received, status = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local current, lane = unpack(redis.call('HMGET', KEYS[1], 'status', 'lane'))
if not current then return 'gone' end
if not may(current, status) then return current end
redis.call('RPUSH', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', status, 'last', ARGV[6], 'task', '')
reindex(id, route, received, current, status)
if ARGV[7] ~= '' then
  for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[7]) end
end
local function close(breaker, parked, digest)
  if redis.call('DEL', breaker) == 0 then return end
  if redis.call('EXISTS', parked) == 1 then
    redis.call('ZUNIONSTORE', KEYS[4], 2, KEYS[4], parked, 'WEIGHTS', 1, 0)
    redis.call('DEL', parked)
    wake_mover(route, 0)  -- due at once
  end
  redis.call('ZREM', KEYS[10], digest)
  redis.call('ZREM', KEYS[11], digest)
end
if ARGV[9] == '1' then close(KEYS[5], KEYS[9], ARGV[14]) end
if ARGV[9] ~= '0' then close(KEYS[12], KEYS[13], ARGV[15]) end
if ARGV[8] ~= '' then
  -- After the closes: a breaker this answer closed parks nothing.
  local breaker, parked, digest
  if ARGV[16] == '1' then breaker, parked, digest = KEYS[5], KEYS[9], ARGV[14] end
  if ARGV[16] == 'o' then breaker, parked, digest = KEYS[12], KEYS[13], ARGV[15] end
  local open_until = breaker and redis.call('HGET', breaker, 'open_until')
  -- Only a retry due before the half-open: a later one keeps its backoff (the next probe would come sooner).
  if open_until and tonumber(ARGV[8]) <= tonumber(open_until) then
    park_behind(KEYS[1], id, KEYS[4], parked, digest, ARGV[17])
    -- The mover lets the next probe out when it half-opens. Already in the index (breaker_fail.lua put it
    -- there), the mover knows when: a wake-up would only re-plan its sleep (the hash's open_until is
    -- the score cut to 14 digits, just earlier than the mover's mark).
    if redis.call('ZADD', KEYS[10], 'NX', open_until, digest) == 1 then wake_mover(route, open_until) end
  else
    redis.call('ZADD', KEYS[4], ARGV[8], id)
    wake_mover(route, ARGV[8])
  end
end
local taken
if lane and (status == DELIVERED or status == DEAD) then
  redis.call('ZREM', KEYS[4], id)  -- a lease from lane.lua's take
  taken = leave_lane(route, lane, id, ARGV[18] and {ARGV[18], ARGV[19], ARGV[20], ARGV[21]},
                     ARGV[22] ~= '' and ARGV[22] or nil, ARGV[23])
end
redis.call('HINCRBY', KEYS[6], ARGV[10], 1)
if ARGV[11] ~= '' then
  redis.call('HINCRBY', KEYS[7], ARGV[11], 1)
  redis.call('HINCRBYFLOAT', KEYS[7], 'sum', ARGV[12])
  redis.call('HINCRBY', KEYS[7], 'count', 1)
  redis.call('INCR', KEYS[8])
  redis.call('EXPIRE', KEYS[8], ARGV[13])
end
-- The taken event's record comes back with the answer: the task sends it next without a round trip to
-- load it (its task and lease are already set above, so the copy is what the journal holds).
if taken then return {'ok ' .. taken, redis.call('HGETALL', EVENT_KEY .. taken)} end
return 'ok'
