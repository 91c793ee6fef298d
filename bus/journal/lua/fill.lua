-- fill.lua: the one function that makes a task message in Lua (lifecycle: every move that queues one).
-- Not a script of its own.
--
-- fill(template, task, body, argsrepr, kwargsrepr): the message `template` (messages.group_template, read
-- by the calling script from its key, journal/templates.py) with task id `task` and the other three values,
-- each given as the JSON string it is in the message (what messages.Outgoing.filling gives, or
-- group.lua makes): the same bytes messages.delivery_message() builds.
local function fill(template, task, body, argsrepr, kwargsrepr)
  local values = {ID = cjson.encode(task), BODY = body, ARGSREPR = argsrepr, KWARGSREPR = kwargsrepr}
  return (string.gsub(template, '"@@(%u+)@@"', function(name) return values[name] end))
end
