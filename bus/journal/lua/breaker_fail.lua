-- breaker_fail.lua: count a retryable failure of an endpoint in its breaker (breakers.py), and open the
-- breaker once `threshold` failures have come in a row, for a wait doubling per step up to `cap`, jittered.
-- No move of an event's status: the breaker's own record.
--
-- KEYS[1]  bus:breaker:<route>:<ep>   the breaker   KEYS[2]  bus:breakers:<route>   the open index
-- KEYS[3]  bus:failing:<route>        the failing index
-- ARGV[1]  now      ARGV[2]  threshold      ARGV[3]  cap (seconds)      ARGV[4]  jitter (0..1)
-- ARGV[5]  '1' when the attempt was the breaker's probe   ARGV[6]  the endpoint's digest
-- ARGV[7]  the endpoint's text      ARGV[8]  the breaker's lifetime after this failure (seconds)
-- ARGV[9]  the route (its retry mover is woken when the breaker opens before it would look: wake_mover)
-- Returns open_until when the breaker is open after it, else nil.
local now, threshold, cap, jitter = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local probe, ep, life = ARGV[5] == '1', ARGV[6], tonumber(ARGV[8])
redis.call('HSETNX', KEYS[1], 'failing_since', ARGV[1])
redis.call('HSET', KEYS[1], 'endpoint', ARGV[7])
redis.call('EXPIRE', KEYS[1], life)
redis.call('ZADD', KEYS[3], now, ep)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tostring(now - life))
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
-- Failures of attempts already in flight when it opened do not lengthen the wait; a failed probe does.
if open_until > now and not probe then return tostring(open_until) end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if failures < threshold and not probe then return false end
local step = redis.call('HINCRBY', KEYS[1], 'step', 1)
local delay = math.min(2 ^ (step - 1), cap)
open_until = now + delay / 2 * (1 + jitter)
redis.call('HSET', KEYS[1], 'open_until', tostring(open_until))
redis.call('HSETNX', KEYS[1], 'since', ARGV[1])
redis.call('ZADD', KEYS[2], open_until, ep)
wake_mover(ARGV[9], open_until)  -- the retry mover lets the probe out when it half-opens
return tostring(open_until)
