-- forget_archived.lua: delete from Redis the delivered events the archive now holds (lifecycle:
-- forget_archived), checking that each is still the one that was written: delivered, with as many
-- attempts and copies. A copy recorded since (replay --to) leaves it in Redis for the next pass;
-- an event no longer delivered (replayed) stays, out of the delivered indexes; one already gone
-- (purged, or expired) only loses its index entries. The checks are per event; the deletes, the
-- index removals and the counters are one command each for the whole batch (per route for the
-- route's index and counter), not six per event: fewer calls here and fewer commands in the AOF.
--
-- KEYS[1]  bus:status:delivered    KEYS[2]  bus:counters
-- ARGV     per event: id, route, attempts, copies (as written)
-- Returns per event 'moved', 'changed' or 'gone'.
local out, deleted, unindexed, by_route, archived = {}, {}, {}, {}, {}
for i = 1, #ARGV / 4 do
  local id, route, attempts, copies = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i]
  local key = EVENT_KEY .. id
  local status, now_attempts = unpack(redis.call('HMGET', key, 'status', 'attempts'))
  local leaves = true
  if not status then
    out[i] = 'gone'
  elseif not may(status, NO_RECORD) then
    -- Not delivered (any more): it does not belong in the delivered indexes the mover reads.
    out[i] = 'changed'
  elseif (now_attempts or '0') ~= attempts or redis.call('LLEN', key .. ':copies') ~= tonumber(copies) then
    out[i] = 'changed'
    leaves = false
  else
    deleted[#deleted + 1] = key
    deleted[#deleted + 1] = key .. ':attempts'
    deleted[#deleted + 1] = key .. ':copies'
    archived[route] = (archived[route] or 0) + 1
    out[i] = 'moved'
  end
  if leaves then
    unindexed[#unindexed + 1] = id
    local same = by_route[route]
    if not same then same = {}; by_route[route] = same end
    same[#same + 1] = id
  end
end
if #deleted > 0 then redis.call('DEL', unpack(deleted)) end
if #unindexed > 0 then redis.call('ZREM', KEYS[1], unpack(unindexed)) end
for route, ids in pairs(by_route) do redis.call('ZREM', route_index(route, DELIVERED), unpack(ids)) end
for route, n in pairs(archived) do redis.call('HINCRBY', KEYS[2], 'archived:' .. route, n) end
return out
