-- hand_back.lua: put one unacked task of a dead worker back at the consuming end of its queue
-- (unacked.py, hand_back), unless it changed or went meanwhile (acked, or handed back by kombu), or a
-- live worker holds it now (a task requeued by a reject and taken again). No move of an event's
-- status: kombu's own bookkeeping, as its restore does it.
--
-- KEYS[1]  unacked (kombu's hash)   KEYS[2]  unacked_index   KEYS[3]  bus.<route> (the task's queue)
-- KEYS[4]  bus:held:<worker> of the dead worker   KEYS[5..]  bus:held:<worker> of each live worker
-- ARGV[1]  the delivery tag   ARGV[2]  its unacked entry as read   ARGV[3]  the message to queue
-- Returns 1 when it was handed back, else 0 (and the dead worker no longer holds the tag).
local gone = redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2]
for k = 5, #KEYS do
  if redis.call('SISMEMBER', KEYS[k], ARGV[1]) == 1 then gone = true end
end
if gone then
  redis.call('SREM', KEYS[4], ARGV[1])
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('SREM', KEYS[4], ARGV[1])
return 1
