-- requeue.lua: a replay to the route (lifecycle: requeue): each event back to queued with a fresh
-- attempt budget (`round`), retention lifted, off the retry schedule and any breaker's parked set,
-- its new message named; then
-- the messages that carry at least one of them are queued. An ordered route's event rejoins its lane
-- at its place (seq, lane.lua): the lowest of a lane with no head becomes its head and is sent by its
-- message; every other one waits in the lane for the events before it (its record names no message,
-- so the replay's message leaves it) and goes out in order as they are done.
--
-- KEYS     per event: bus:event:<id>, bus:event:<id>:attempts, bus:event:<id>:copies,
--          bus:retry:<route>; then per message: bus.<route> (its queue) and bus:template:<digest> (its
--          route's message template, journal/templates.py: stored in the same MULTI before this runs)
-- ARGV[1]  number of events     ARGV[2]  now (the record's `replayed`)
-- ARGV     per event: id, route, the status the replay listed it in ('' : any), its message's
--          task id, its message's number (1-based); then per message: its task id, body, argsrepr and
--          kwargsrepr (messages.Outgoing.filling)
-- Returns per event 'ok', 'gone', or the status it is in when that is not the one listed (it
-- moved since: a delivery, a purge and a new accept): such an event is left as it is. A template key
-- gone refuses (BUSTEMPLATE <key>) before anything is written.
local n, now = tonumber(ARGV[1]), ARGV[2]
local templates = {}
for m = 1, (#ARGV - 2 - 5 * n) / 4 do  -- read before anything is written: one gone refuses the whole call
  templates[m] = redis.call('GET', KEYS[4 * n + 2 * m])
  if not templates[m] then return redis.error_reply(TEMPLATE_REFUSED .. KEYS[4 * n + 2 * m] .. TEMPLATE_GONE) end
end
local used, out, laned = {}, {}, {}
for e = 1, n do
  local a = 2 + 5 * (e - 1)
  local id, route, listed, task, message = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], tonumber(ARGV[a + 5])
  local record = KEYS[4 * e - 3]
  local status, attempts, received, parked, lane, seq = unpack(redis.call('HMGET', record, 'status', 'attempts',
                                                                         'received', 'parked', 'lane', 'seq'))
  if not status then
    out[e] = 'gone'
  elseif (listed ~= '' and status ~= listed) or not may(status, QUEUED) then
    out[e] = status
  else
    redis.call('HSET', record, 'status', QUEUED, 'round', attempts or '0', 'replayed', now, 'task', task)
    for k = 4 * e - 3, 4 * e - 1 do redis.call('PERSIST', KEYS[k]) end
    reindex(id, route, received, status, QUEUED)
    redis.call('ZREM', KEYS[4 * e], id)
    -- held back behind a breaker (breakers.py): the replay's message sends it now
    if parked then redis.call('ZREM', parked_set(route, parked), id) end
    used[message] = true
    out[e] = 'ok'
    if lane then
      redis.call('ZADD', lane_set(route, lane), seq, id)
      laned[#laned + 1] = {route, lane, id}
    end
  end
end
for _, event in ipairs(laned) do
  local route, lane, id = unpack(event)
  local lanes = lanes_hash(route)
  local head = redis.call('HGET', lanes, lane)
  if not head then
    head = redis.call('ZRANGE', lane_set(route, lane), 0, 0)[1]
    redis.call('HSET', lanes, lane, head)
  end
  if head ~= id then redis.call('HSET', EVENT_KEY .. id, 'task', '') end
end
for m, template in ipairs(templates) do
  if used[m] then
    local a = 2 + 5 * n + 4 * (m - 1)
    redis.call('LPUSH', KEYS[4 * n + 2 * m - 1], fill(template, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]))
  end
end
return out
