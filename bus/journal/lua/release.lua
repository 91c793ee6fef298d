-- release.lua: the retry mover takes due events off the route's schedule into messages at the
-- head of the queue (lifecycle: release; status stays retrying, the message is named).
-- RPUSH puts them at the consuming end (kombu LPUSHes and BRPOPs): they have waited longer than
-- anything queued, and a probe must not wait behind a backlog that is only going to be parked again.
--
-- KEYS[1]  bus:retry:<route>    the schedule
-- KEYS[2]  bus.<route>          the route's Celery queue
-- KEYS[3]  bus:template:<digest>  the route's message template (journal/templates.py)
-- ARGV     groups of: count, task id, the ids (count of them), the message's body, argsrepr and
--          kwargsrepr (messages.Outgoing.filling: fill.lua makes the message)
-- The earliest group is pushed last so it is next in line. An id another mover already took off
-- the schedule is not counted again, nor named; nor is one the table does not let the schedule
-- release (not retrying: it was replayed or purged meanwhile). A message none of whose events it
-- names is not pushed. Returns how many events were released; a template key gone refuses
-- (BUSTEMPLATE <key>) before anything is moved.
local template = redis.call('GET', KEYS[3])
if not template then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[3] .. TEMPLATE_GONE) end
local starts = {}
local i = 1
while i <= #ARGV do
  starts[#starts + 1] = i
  i = i + tonumber(ARGV[i]) + 5
end
local moved = 0
for g = #starts, 1, -1 do
  local first, n, task = starts[g] + 2, tonumber(ARGV[starts[g]]), ARGV[starts[g] + 1]
  local named = 0
  for j = first, first + n - 1 do
    if redis.call('ZREM', KEYS[1], ARGV[j]) == 1 then
      named = named + own({ARGV[j]}, task)
    end
  end
  if named > 0 then
    redis.call('RPUSH', KEYS[2], fill(template, task, ARGV[first + n], ARGV[first + n + 1], ARGV[first + n + 2]))
    moved = moved + named
  end
end
return moved
