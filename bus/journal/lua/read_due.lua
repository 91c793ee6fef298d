-- load_whole.lua: the archive mover's read of a batch of delivered events, whole (archiving.py,
-- load_whole). A read, no move. One script call per batch, not three commands per event: the mover's
-- reads cost Redis and the worker's main process (where Celery's consumer also runs) a third of what a
-- pipeline did.
--
-- KEYS[1..n]  bus:event:<id> of each event (its attempts and copies are that key with ':attempts' and
--             ':copies' after it, keys.py)
-- ARGV        none
-- Returns per event {record as HGETALL, attempts, copies} (empty lists for an event gone).
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = {redis.call('HGETALL', key), redis.call('LRANGE', key .. ':attempts', 0, -1),
            redis.call('LRANGE', key .. ':copies', 0, -1)}
end
return out
