-- accept.lua: journal the events of one request (lifecycle: accept), atomically and in one round
-- trip: each record as queued, its two index entries, the pending entries and the accepted counter,
-- and a task message when none of the route is coming (lifecycle: group, group.lua).
--
-- Accepting is idempotent by id, for a producer's spool that sends a batch again (its reply was
-- lost, or it was killed between Redis taking the batch and the spool forgetting it): an event
-- whose record exists is skipped (not journaled, indexed, pended or counted again), and so is one
-- at or before the spool's mark for the route, the place up to which Redis took that spool's
-- events of the route. The mark is what still knows an event delivered and archived out of Redis
-- since (bus/archive/): ~210 B per spool and ~30 B per more route, where remembering each id
-- would cost ~145 B per event for the window (docs/performance.md). A spool sends in order, so the
-- mark only grows; a call whose `after` (the last place of the part before it in the same send) is
-- past the mark finds that part not taken, and refuses (BUSGAP), so the whole send is tried again
-- and nothing is skipped that Redis never took. Ids are fresh UUIDv7s on every other path, so there
-- the check costs one EXISTS per event (docs/design.md has the measurement).
--
-- KEYS[1]  bus:status:queued        KEYS[2]  bus:route:<route>:queued   KEYS[3]  bus.<route> (queue)
-- KEYS[4]  bus:counters             KEYS[5]  bus:pending:<route>        KEYS[6]  bus:filling:<route>
-- KEYS[6 + e]  bus:event:<id> of the e-th event
-- KEYS[7 + n]  bus:idempotency:<tag>:<key> (a placeholder when the request has none)
-- KEYS[8 + n]  the spool's mark hash (a placeholder when no spool sends)
-- KEYS[9 + n]  bus:template:<digest>, the route's task message template (journal/templates.py)
-- ARGV[1]  number of events n    ARGV[2]  route    ARGV[3]  the accepted counter's field
-- ARGV[4]  group size   ARGV[5]  how many events argsrepr shows   ARGV[6]  the filling flag's lifetime in ms
-- ARGV[7]  the idempotency record to keep ('' for none: then nothing of it is read)
-- ARGV[8]  its digest             ARGV[9]  its lifetime in seconds
-- ARGV[10] the spool mark's `after`   ARGV[11] its lifetime in seconds (0: no spool, nothing of it is read)
-- ARGV[12] the route's order: '' (unordered), 'tag' or 'field:<name>' (an ordered route: each event
--          joins its key's lane, lane.lua, and only a lane's head goes onto the pending list)
-- ARGV[13..]  per event: id, tag, body, headers, received; then (spool calls only) each event's place
-- Returns the number of events written, or {'repeat', record} for a key seen with the same digest
-- (nothing written), or {'conflict'} for a key seen with another. A call that may queue a message
-- (no message of the route is coming) and finds the template key gone refuses, BUSTEMPLATE <key>,
-- before writing anything: the caller stores the template and calls again.
local n, route = tonumber(ARGV[1]), ARGV[2]
local first, order = 13, ARGV[12]
local idempotency = KEYS[7 + n]
if ARGV[7] ~= '' then
  local seen = redis.call('GET', idempotency)
  if seen then
    if string.sub(seen, 1, #ARGV[8] + 1) == ARGV[8] .. ' ' then return {'repeat', seen} end
    return {'conflict'}
  end
end
local spooled, mark = ARGV[11] ~= '0', false
local places = first + 5 * n - 1
if spooled then
  mark = redis.call('HGET', KEYS[8 + n], route)
  if ARGV[10] ~= '' and (not mark or mark < ARGV[10]) then
    return redis.error_reply('BUSGAP an earlier part of this spool send was not taken; the spool sends it all again')
  end
end
-- Read only when this call may queue a message: the flag is there while one of the route is coming.
local template = false
if redis.call('EXISTS', KEYS[6]) == 0 then
  template = redis.call('GET', KEYS[9 + n])
  if not template then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[9 + n] .. TEMPLATE_GONE) end
end
local entries, written, pushed = {}, 0, 0
for e = 1, n do
  local i = first + (e - 1) * 5
  local id, received = ARGV[i], ARGV[i + 4]
  if not (mark and ARGV[places + e] <= mark) and redis.call('EXISTS', KEYS[6 + e]) == 0 then  -- the only move from NO_RECORD
    redis.call('HSET', KEYS[6 + e], 'tag', ARGV[i + 1], 'route', route, 'body', ARGV[i + 2],
               'headers', ARGV[i + 3], 'received', received, 'status', QUEUED)
    redis.call('ZADD', KEYS[1], received, id)
    redis.call('ZADD', KEYS[2], received, id)
    if order == '' or join_lane(route, lane_of(order, ARGV[i + 1], ARGV[i + 2]), id, KEYS[6 + e]) then
      entries[#entries + 1] = id .. ' ' .. ARGV[i + 1]
      pushed = pushed + 1
    end
    written = written + 1
  end
  if #entries == 1000 or (e == n and #entries > 0) then  -- unpack() has a stack limit; a batch may hold 10,000
    redis.call('RPUSH', KEYS[5], unpack(entries))
    entries = {}
  end
end
if written > 0 then
  if pushed > 0 and template and redis.call('SET', KEYS[6], '1', 'NX', 'PX', ARGV[6]) then
    take_group(KEYS[5], KEYS[3], template, tonumber(ARGV[4]), tonumber(ARGV[5]))
  end
  redis.call('HINCRBY', KEYS[4], ARGV[3], written)
end
if ARGV[7] ~= '' then redis.call('SET', idempotency, ARGV[7], 'EX', ARGV[9]) end
if spooled then
  if not mark or ARGV[places + n] > mark then redis.call('HSET', KEYS[8 + n], route, ARGV[places + n]) end
  redis.call('EXPIRE', KEYS[8 + n], ARGV[11])
end
return written
