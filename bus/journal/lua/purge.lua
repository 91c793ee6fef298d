-- purge.lua: delete events for good (lifecycle: purge): record, attempts, copies, schedule entry,
-- the parked set of a breaker that holds it back, its place in an ordered route's lane (the next event
-- of the lane then goes out: lifecycle: next_in_lane), and every index entry, in one step.
--
-- KEYS     per event: bus:event:<id>, bus:event:<id>:attempts, bus:event:<id>:copies, bus:retry:<route>
-- ARGV     per event: id, route, the status the caller listed it in ('' : any)
-- Returns per event 'purged'; 'gone' (no record: only its index entries were left, now removed);
-- or the status it is in when that is not the one listed (it moved since: a delivery, a replay),
-- and then nothing of it is touched.
local out = {}
for e = 1, #ARGV / 3 do
  local id, route, listed = ARGV[3 * e - 2], ARGV[3 * e - 1], ARGV[3 * e]
  local record = KEYS[4 * e - 3]
  local status, parked, lane = unpack(redis.call('HMGET', record, 'status', 'parked', 'lane'))
  if status and ((listed ~= '' and status ~= listed) or not may(status, NO_RECORD)) then
    out[e] = status
  else
    redis.call('DEL', record, KEYS[4 * e - 2], KEYS[4 * e - 1])
    redis.call('ZREM', KEYS[4 * e], id)
    -- held back behind an endpoint's open breaker (breakers.py): out of its parked set too
    if parked then redis.call('ZREM', parked_set(route, parked), id) end
    -- an ordered route's: out of its lane, and the lane's next event goes out if it was the head
    if lane then leave_lane(route, lane, id, nil) end
    -- Every status, not only the one read: an entry a crash or an older bus left behind goes too.
    for _, s in ipairs(STATUSES) do
      redis.call('ZREM', status_index(s), id)
      if route ~= '' then redis.call('ZREM', route_index(route, s), id) end
    end
    out[e] = status and 'purged' or 'gone'
  end
end
return out
