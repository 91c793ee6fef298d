-- record_copy.lua: keep the attempt of a replay sent to another URL (--to) beside its event
-- (transitions.py, record_copy). No move: the event's own state is untouched. Only beside a record still
-- in Redis: a copy of an archived event goes to its archive row instead, and a list left behind for an
-- event the archive mover just took would never be deleted.
--
-- KEYS[1]  bus:event:<id>   the record    KEYS[2]  bus:event:<id>:copies   its copies
-- ARGV[1]  the copy's attempt JSON
-- Returns 1 when it was kept, 0 when the record is gone (archived).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
return 1
