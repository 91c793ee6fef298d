-- lane.lua: functions the scripts of ordered routes share (lifecycle: next_in_lane). Not a script of its own.
--
-- An ordered route keeps its events of one order key in a lane (keys.py): a sorted set of the undone
-- ones by acceptance order (`seq`, from the route's counter), and, in the route's lanes hash, its head:
-- the one event of the lane that is out (pending, in a message, on the retry schedule, held back by a
-- breaker, in flight). Only a head is ever sent, and the next one goes out only when the head is done
-- (delivered, dead, purged) in the same script that records it, so no event overtakes an earlier one of
-- its key, whatever the workers, retries, crashes or replays do. A retrying head holds back its own
-- lane alone: other lanes' heads are sent meanwhile.

-- The lane an event joins, by the route's `order` ('tag' or 'field:<name>'): '<destination>:<key>'
-- (keys.lane_name; '' is the route's own endpoint). The ways in refuse an event whose field is missing
-- or not a string, number or boolean (intake.prepare); should one get here, its tag is its key.
local function lane_of(order, tag, body)
  if order == 'tag' then return ':' .. tag end
  local ok, record = pcall(cjson.decode, body)
  local value = ok and type(record) == 'table' and record[string.sub(order, 7)]
  local kind = type(value)
  if kind == 'string' then return ':' .. value end
  if kind == 'number' or kind == 'boolean' then return ':' .. tostring(value) end
  return ':' .. tag
end

-- A new event (its record `record` just written) joins its lane at the end; true when the lane had no
-- head, so the event is its head and goes onto the pending list now.
local function join_lane(route, lane, id, record)
  local seq = redis.call('INCR', order_counter(route))
  redis.call('HSET', record, 'lane', lane, 'seq', seq)
  redis.call('ZADD', lane_set(route, lane), seq, id)
  return redis.call('HSETNX', lanes_hash(route), lane, id) == 1
end

-- Event `id` is done with its lane (delivered, dead, purged) and leaves it. When it was the head, the
-- next one (lowest seq) that is still queued becomes the head and goes onto the pending list, with a
-- message when none of the route is coming and the caller gave `group` (message template key, group
-- size, events shown, the filling flag's ms); without it, or with the template key gone (it is not worth
-- refusing an attempt's record for), the mover, woken, makes that message at once
-- (scheduler.py refills a pending list with no message coming). A task that sent the head may `take`
-- the next one (its task id) and send it itself at once, saving it the trip through the queue: the
-- record then names that task, and the event waits on the retry schedule until `lease_at` (the
-- attempt's longest time), so that should the task die first the mover sends it (lifecycle:
-- lane_lease). Returns the id taken, if any.
local function leave_lane(route, lane, id, group, take, lease_at)
  local set, lanes = lane_set(route, lane), lanes_hash(route)
  redis.call('ZREM', set, id)
  if redis.call('HGET', lanes, lane) ~= id then return end
  for _ = 1, 100 do  -- members whose record went without leaving (an older bus's purge) are skipped
    local nxt = redis.call('ZRANGE', set, 0, 0)[1]
    if not nxt then break end
    local status, tag = unpack(redis.call('HMGET', EVENT_KEY .. nxt, 'status', 'tag'))
    if status == QUEUED then
      redis.call('HSET', lanes, lane, nxt)
      if take then
        redis.call('HSET', EVENT_KEY .. nxt, 'task', take)
        redis.call('ZADD', retry_schedule(route), lease_at, nxt)
        wake_mover(route, lease_at)
        return nxt
      end
      local pending = pending_list(route)
      redis.call('RPUSH', pending, nxt .. ' ' .. tag)
      local flag = filling_flag(route)
      local idle = group and redis.call('EXISTS', flag) == 0  -- read once: no message of the route is coming
      local template = idle and redis.call('GET', group[1])
      if template then
        redis.call('SET', flag, '1', 'PX', group[4])
        take_group(pending, route_queue(route), template, tonumber(group[2]), tonumber(group[3]))
      elseif idle or not group then
        wake_mover(route, 0)  -- no message is coming: its refill makes one
      end
      return
    end
    redis.call('ZREM', set, nxt)
  end
  redis.call('HDEL', lanes, lane)
end
