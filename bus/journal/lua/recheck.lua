-- recheck.lua: whether a redelivered task still sends each of its events, right before sending
-- (no move: it reads). Another copy of the message may have attempted one meanwhile (its record
-- then names no task) or recovery may have handed it to a new message.
--
-- KEYS     bus:event:<id> of each event
-- ARGV[1]  the task's id
-- Returns per event 'ok <attempts> <status>' (this task sends it; the caller refreshes its copy),
-- 'gone', 'superseded', or its final status (delivered, dead).
local out = {}
for i, record in ipairs(KEYS) do
  local status, attempts, task = unpack(redis.call('HMGET', record, 'status', 'attempts', 'task'))
  if not status then
    out[i] = 'gone'
  elseif status == DELIVERED or status == DEAD then
    out[i] = status
  elseif task and task ~= ARGV[1] then
    out[i] = 'superseded'
  else
    out[i] = 'ok ' .. (attempts or '0') .. ' ' .. status
  end
end
return out
