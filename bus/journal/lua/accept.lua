-- accept.lua: journal the events of one request (lifecycle: accept), atomically and in one round
-- trip: each record as queued, its two index entries, the pending entries and the accepted counter,
-- and a task message when none of the route is coming (lifecycle: group, group.lua).
-- An event whose record already exists is skipped (not journaled, indexed, pended or counted
-- again): accepting is idempotent by id, so a producer's spool that sends a batch again (its reply
-- was lost, or it was killed between Redis taking the batch and the spool forgetting it) makes no
-- second journal or pending entry. Ids are fresh UUIDv7s on every other path, so there the check
-- costs one EXISTS per event (docs/design.md has the measurement).
--
-- KEYS[1]  bus:status:queued        KEYS[2]  bus:route:<route>:queued   KEYS[3]  bus.<route> (queue)
-- KEYS[4]  bus:counters             KEYS[5]  bus:pending:<route>        KEYS[6]  bus:filling:<route>
-- KEYS[6 + e]  bus:event:<id> of the e-th event
-- KEYS[7 + n]  bus:idempotency:<tag>:<key> (a placeholder when the request has none)
-- ARGV[1]  number of events n    ARGV[2]  route    ARGV[3]  the accepted counter's field
-- ARGV[4]  the message template   ARGV[5]  group size   ARGV[6]  how many events argsrepr shows
-- ARGV[7]  the filling flag's lifetime in ms
-- ARGV[8]  the idempotency record to keep ('' for none: then nothing of it is read)
-- ARGV[9]  its digest             ARGV[10] its lifetime in seconds
-- ARGV[11..]  per event: id, tag, body, headers, received
-- Returns the number of events written, or {'repeat', record} for a key seen with the same digest
-- (nothing written), or {'conflict'} for a key seen with another.
local n, route = tonumber(ARGV[1]), ARGV[2]
local first = 11
local idempotency = KEYS[7 + n]
if ARGV[8] ~= '' then
  local seen = redis.call('GET', idempotency)
  if seen then
    if string.sub(seen, 1, #ARGV[9] + 1) == ARGV[9] .. ' ' then return {'repeat', seen} end
    return {'conflict'}
  end
end
local entries, written = {}, 0
for e = 1, n do
  local i = first + (e - 1) * 5
  local id, received = ARGV[i], ARGV[i + 4]
  if redis.call('EXISTS', KEYS[6 + e]) == 0 then  -- the only move from NO_RECORD
    redis.call('HSET', KEYS[6 + e], 'tag', ARGV[i + 1], 'route', route, 'body', ARGV[i + 2],
               'headers', ARGV[i + 3], 'received', received, 'status', QUEUED)
    redis.call('ZADD', KEYS[1], received, id)
    redis.call('ZADD', KEYS[2], received, id)
    entries[#entries + 1] = id .. ' ' .. ARGV[i + 1]
    written = written + 1
  end
  if #entries == 1000 or (e == n and #entries > 0) then  -- unpack() has a stack limit; a batch may hold 10,000
    redis.call('RPUSH', KEYS[5], unpack(entries))
    entries = {}
  end
end
if written > 0 then
  if redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[7]) then
    take_group(KEYS[5], KEYS[3], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]))
  end
  redis.call('HINCRBY', KEYS[4], ARGV[3], written)
end
if ARGV[8] ~= '' then redis.call('SET', idempotency, ARGV[8], 'EX', ARGV[10]) end
return written
