-- forget_archived.lua: delete from Redis the delivered events the archive now holds (lifecycle:
-- forget_archived), checking that each is still the one that was written: delivered, with as many
-- attempts and copies. A copy recorded since (replay --to) leaves it in Redis for the next pass;
-- an event no longer delivered (replayed) stays, out of the delivered indexes; one already gone
-- (purged, or expired) only loses its index entries.
--
-- KEYS[1]  bus:status:delivered    KEYS[2]  bus:counters
-- KEYS[2 + i]  bus:route:<route>:delivered of the i-th event
-- ARGV     per event: id, route, attempts, copies (as written)
-- Returns per event 'moved', 'changed' or 'gone'.
local out = {}
for i = 1, #ARGV / 4 do
  local id, route, attempts, copies = ARGV[4 * i - 3], ARGV[4 * i - 2], ARGV[4 * i - 1], ARGV[4 * i]
  local key = EVENT_KEY .. id
  local status, now_attempts = unpack(redis.call('HMGET', key, 'status', 'attempts'))
  if not status then
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2 + i], id)
    out[i] = 'gone'
  elseif not may(status, NO_RECORD) then
    -- Not delivered (any more): it does not belong in the delivered indexes the mover reads.
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2 + i], id)
    out[i] = 'changed'
  elseif (now_attempts or '0') ~= attempts or redis.call('LLEN', key .. ':copies') ~= tonumber(copies) then
    out[i] = 'changed'
  else
    redis.call('DEL', key, key .. ':attempts', key .. ':copies')
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2 + i], id)
    redis.call('HINCRBY', KEYS[2], 'archived:' .. route, 1)
    out[i] = 'moved'
  end
end
return out
