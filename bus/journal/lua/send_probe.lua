-- send_probe.lua: a half-open breaker lets one held-back event out as its probe, at the head of the
-- route's queue (lifecycle: send_probe; status stays retrying, the probe's message named), and
-- keeps every other event of the endpoint waiting until it reports or the deadline passes.
--
-- KEYS[1]  bus:parked:<route>:<endpoint>   KEYS[2]  bus:breaker:<route>:<endpoint>
-- KEYS[3]  bus:breakers:<route>            KEYS[4]  bus.<route> (queue)
-- KEYS[5]  bus:template:<digest>  the route's message template (journal/templates.py)
-- ARGV[1]  the event's id   ARGV[2]  the probe's task id
-- ARGV[3..5]  the message's body, argsrepr and kwargsrepr (messages.Outgoing.filling)
-- ARGV[6]  the probe's deadline   ARGV[7]  the breaker's lifetime   ARGV[8]  the endpoint's digest
-- Returns 1, or 0 when the event was no longer held back there (another mover took it); a template
-- key gone refuses (BUSTEMPLATE <key>) before anything is written.
local template = redis.call('GET', KEYS[5])
if not template then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[5] .. TEMPLATE_GONE) end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
own({ARGV[1]}, ARGV[2])
redis.call('RPUSH', KEYS[4], fill(template, ARGV[2], ARGV[3], ARGV[4], ARGV[5]))
redis.call('HSET', KEYS[2], 'open_until', ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[8])
return 1
