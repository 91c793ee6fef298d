-- forget_worker.lua: forget a dead worker once nothing of it is left to hand back (unacked.py, hand_back).
--
-- KEYS[1]  bus:workers   KEYS[2]  bus:held:<worker>
-- ARGV[1]  the worker (host:pid)
-- Returns 1 when it was forgotten, 0 when it still holds tags.
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
