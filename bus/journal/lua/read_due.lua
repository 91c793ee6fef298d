-- read_due.lua: the archive mover's read of the delivered events past the hot window, whole
-- (archiving.py, read_due). A read, no move. One script call per batch for the ids and the records:
-- a pipeline of three commands per event cost Redis and the worker's main process (where Celery's
-- consumer also runs) three times what one script did, and the ids' own round trip went into it too.
-- The record's fields come in the caller's order (HMGET, not HGETALL: only what the archive keeps,
-- no names), and its attempts and copies as the JSON arrays the archive stores (joined here, so the
-- client parses one string, not one per attempt): a flat reply of fixed stride, nothing nested.
--
-- KEYS[1]  bus:status:delivered (each event's record is EVENT_KEY .. id, its attempts and copies
--          that key with ':attempts' and ':copies' after it, keys.py)
-- ARGV[1]  received before (the cutoff)   ARGV[2]  how many   ARGV[3]  how many to skip first
-- ARGV[4..]  the record's fields to return
-- Returns per event: id, each field (nil when absent: all nil for an event gone), the attempts as a
-- JSON array, the copies as a JSON array, how many copies.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', tonumber(ARGV[3]), tonumber(ARGV[2]))
local fields = {unpack(ARGV, 4)}
local n = #fields
local out = {}
for _, id in ipairs(ids) do
  local key = EVENT_KEY .. id
  local values = redis.call('HMGET', key, unpack(fields))
  local copies = redis.call('LRANGE', key .. ':copies', 0, -1)
  out[#out + 1] = id
  for j = 1, n do out[#out + 1] = values[j] end
  out[#out + 1] = '[' .. table.concat(redis.call('LRANGE', key .. ':attempts', 0, -1), ',') .. ']'
  out[#out + 1] = '[' .. table.concat(copies, ',') .. ']'
  out[#out + 1] = #copies
end
return out
