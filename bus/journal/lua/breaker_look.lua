-- breaker_look.lua: the mover at an open breaker whose time has come (breakers.py, Look): a breaker gone
-- (it expired, or the endpoint answered) releases what it held back onto the retry schedule, due now; one
-- still open is put back in the open index for later; a half-open one names its probe, the longest-held
-- event. No move of an event's status (send_probe.lua then moves the probe).
--
-- KEYS[1]  bus:breaker:<route>:<ep>   the breaker      KEYS[2]  bus:parked:<route>:<ep>   its held-back ids
-- KEYS[3]  bus:breakers:<route>       the open index   KEYS[4]  bus:retry:<route>         the retry schedule
-- ARGV[1]  the endpoint's digest   ARGV[2]  now
-- Returns {'released', n}, {'open', 0}, {'empty', 0} or {'probe', 0, id, tag, attempts}. Held-back ids
-- whose record is gone (purged, expired) are dropped on the way to the probe.
local open_until = redis.call('HGET', KEYS[1], 'open_until')
if not open_until then
  local n = redis.call('ZCARD', KEYS[2])
  if n > 0 then
    redis.call('ZUNIONSTORE', KEYS[4], 2, KEYS[4], KEYS[2], 'WEIGHTS', 1, 0)
    redis.call('DEL', KEYS[2])
  end
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'released', n}
end
if tonumber(open_until) > tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[3], open_until, ARGV[1])
  return {'open', 0}
end
for _ = 1, 100 do
  local first = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #first == 0 then
    redis.call('ZREM', KEYS[3], ARGV[1])
    return {'empty', 0}
  end
  local tag, attempts = unpack(redis.call('HMGET', EVENT_KEY .. first[1], 'tag', 'attempts'))
  if tag then return {'probe', 0, first[1], tag, attempts or '0'} end
  redis.call('ZREM', KEYS[2], first[1])
end
return {'open', 0}
