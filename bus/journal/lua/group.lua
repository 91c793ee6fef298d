-- group.lua: functions accept.lua and refill.lua share (lifecycle: group), after fill.lua. Not a script of its own.
--
-- group_message(template, entries, shown): the task message for "<id> <tag>" entries, filled into
-- messages.group_template() (the same message messages.delivery_message() builds), and its ids. The
-- template is what the calling script read from its key in Redis (journal/templates.py).
local function group_message(template, entries, shown)
  local ids, described = {}, {}
  for i, entry in ipairs(entries) do
    local space = string.find(entry, ' ', 1, true)
    ids[i] = string.sub(entry, 1, space - 1)
    if i <= shown then described[i] = string.sub(entry, space + 1) .. ' ' .. ids[i] .. ' attempt 1' end
  end
  local argsrepr = table.concat(described, ', ')
  if #entries > shown then argsrepr = #entries .. ' events: ' .. argsrepr .. ', ...' end
  local body = '[[["' .. table.concat(ids, '","') ..
               '"]],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
  return fill(template, ids[1], cjson.encode(body), cjson.encode(argsrepr), '"{}"'), ids
end

-- Take up to `size` entries off the pending list into one message at the tail of the queue; the
-- message's task id is its first event's id, and the records of its events (still queued) name it.
local function take_group(pending, queue, template, size, shown)
  local entries = redis.call('LPOP', pending, size)
  if not entries then return false end
  local message, ids = group_message(template, entries, shown)
  own(ids, ids[1])
  redis.call('LPUSH', queue, message)
  return true
end
