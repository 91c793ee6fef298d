"""The journal's Lua scripts: read once from bus/journal/lua/, each behind a prelude made from Python's names.

Status names come from bus/lifecycle.py and key prefixes from keys.py, substituted at load rather
than passed in ARGV: they never change while a process runs, so they cost no bytes per call, and a
Lua file never types a status or a key name. Each script also gets its own rows of the lifecycle
table (MOVES) and the checks every move makes with them (may, owned, own). The result is a plain
source string: redis-py's Script and the pipelined clients run it by SHA (EVALSHA, and EVAL after
NOSCRIPT), so a Redis restart only costs the next call one reload.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from .. import lifecycle
from .keys import event_key, index_key, pending_key

_LUA = resources.files(__package__) / "lua"


def _concat(template: str, parts: dict[str, str]) -> str:
    """A key keys.py built with placeholders, as a Lua expression that joins its pieces with the
    Lua variables named by `parts` (placeholder -> variable)."""
    lua = _lua_string(template)
    for mark, variable in parts.items():
        lua = lua.replace(mark, f"' .. {variable} .. '")
    return lua.replace("'' .. ", "").replace(" .. ''", "")


def _lua_string(text: str) -> str:
    assert "'" not in text and "\\" not in text
    return f"'{text}'"


def prelude(name: str) -> str:
    """What goes before script `name`: the status names, the key builders, and the script's moves."""
    moves = sorted(lifecycle.pairs(name))
    table = ", ".join(f"[{_lua_string(a + '>' + b)}] = true" for a, b in moves)
    names = ", ".join(s.upper() for s in lifecycle.STATUSES)
    values = ", ".join(_lua_string(s) for s in lifecycle.STATUSES)
    return f"""-- Prelude from bus/journal/scripts.py (names from bus/lifecycle.py and bus/journal/keys.py).
local {names} = {values}
local STATUSES = {{{names}}}
local NO_RECORD = {_lua_string(lifecycle.NO_RECORD)}
local EVENT_KEY = {_lua_string(event_key(""))}
local function status_index(status) return {_concat(index_key("@S@"), {"@S@": "status"})} end
local function route_index(route, status) return {_concat(index_key("@S@", "@R@"), {"@S@": "status", "@R@": "route"})} end
local function pending_list(route) return {_concat(pending_key("@R@"), {"@R@": "route"})} end
-- The rows of the lifecycle table this script does: from .. '>' .. to (NO_RECORD: no record).
local MOVES = {{{table}}}
local function may(from, to) return MOVES[(from or NO_RECORD) .. '>' .. (to or NO_RECORD)] == true end
-- A caller that names its task ('' names none: the CLI, tests) may move an event whose record names
-- that task, or none at all (a record from before the field existed).
local function owned(task, caller) return caller == '' or not task or task == caller end
-- Take the event out of the indexes of `from` (the status the script read) and into those of `to`,
-- scored by its received time.
local function reindex(id, route, received, from, to)
  if from and from ~= to then
    redis.call('ZREM', status_index(from), id)
    redis.call('ZREM', route_index(route, from), id)
  end
  if to then
    redis.call('ZADD', status_index(to), received, id)
    redis.call('ZADD', route_index(route, to), received, id)
  end
end
-- Name `task` in the records of those ids this script may hand over (may(status, status)); how many.
local function own(ids, task)
  local named = 0
  for _, id in ipairs(ids) do
    local key = EVENT_KEY .. id
    local status = redis.call('HGET', key, 'status')
    if status and may(status, status) then
      redis.call('HSET', key, 'task', task)
      named = named + 1
    end
  end
  return named
end
"""


@lru_cache(maxsize=None)
def load(name: str, *libraries: str) -> str:
    """Script `name` (a file in lua/) with its prelude and, before it, the `libraries` it calls (files
    of Lua functions shared by scripts). Read once per process."""
    parts = [prelude(name)] + [(_LUA / lib).read_text() for lib in libraries] + [(_LUA / name).read_text()]
    return "\n".join(parts)
