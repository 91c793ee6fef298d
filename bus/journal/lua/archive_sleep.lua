-- archive_sleep.lua: the archive mover (bus/archive/mover.py) moved what was due and plans when to
-- look again: when `want` delivered events will be past the hot window, or when the oldest will
-- have waited `linger` seconds past it, and no later than `longest` from now; and, in the same step,
-- stretches its lease over that wait and a margin, so no other mover takes over meanwhile. An event
-- delivered later is received later than the oldest here (or was received long ago, a retry: it waits
-- at most `longest`), so nothing added during the wait calls for an earlier look. No move: it reads.
--
-- KEYS[1]  bus:archive:mover   KEYS[2]  bus:status:delivered
-- ARGV[1]  the mover's id   ARGV[2]  now   ARGV[3]  the hot window (s)   ARGV[4]  longest wait (s)
-- ARGV[5]  linger (s)   ARGV[6]  want (events)   ARGV[7]  the lease's margin (ms)
-- Returns the time to look again (a string: Redis cuts a Lua number to an integer).
local now, hot = tonumber(ARGV[2]), tonumber(ARGV[3])
local wake_at = now + tonumber(ARGV[4])
local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if oldest[2] then wake_at = math.min(wake_at, tonumber(oldest[2]) + hot + tonumber(ARGV[5])) end
local nth = tonumber(ARGV[6]) - 1
local wanted = redis.call('ZRANGE', KEYS[2], nth, nth, 'WITHSCORES')
if wanted[2] then wake_at = math.min(wake_at, tonumber(wanted[2]) + hot) end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], math.max(0, math.ceil((wake_at - now) * 1000)) + tonumber(ARGV[7]))
end
return string.format('%.6f', wake_at)
