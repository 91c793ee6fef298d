"""The bus's Lua scripts: read once from bus/journal/lua/ (or bus/broker/lua/), each behind a prelude made from Python's names.

Status names come from bus/lifecycle.py and key prefixes from keys.py, substituted at load rather
than passed in ARGV: they never change while a process runs, so they cost no bytes per call, and a
Lua file never types a status or a key name. Each script also gets its own rows of the lifecycle
table (MOVES) and the checks the moves share (may, owned, own, reindex): only those it uses. The result is a plain
source string: redis-py's Script and the pipelined clients run it by SHA (EVALSHA, and EVAL after
NOSCRIPT), so a Redis restart only costs the next call one reload.
"""
from __future__ import annotations

import re
from functools import cache
from importlib import resources

from .. import lifecycle
from .keys import (
    breaker_key,
    event_key,
    filling_key,
    index_key,
    lane_key,
    lanes_key,
    lease_key,
    mover_sleeps_key,
    order_counter_key,
    parked_key,
    pending_key,
    queue_name,
    retry_key,
    wake_key,
)
from .templates import REFUSAL

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


def _definitions(script: str) -> list[tuple[str, str]]:
    """(name, Lua) of everything a prelude may define, in the order they must be defined."""
    statuses = [(s.upper(), f"local {s.upper()} = {_lua_string(s)}") for s in lifecycle.STATUSES]
    # The script's rows as one string searched by may(): a constant costs nothing per call, where a
    # table would be built on every call (the prelude runs with the script each time).
    moves = " ".join(f"{a}>{b}" for a, b in sorted(lifecycle.pairs(script)))
    return statuses + [
        ("STATUSES", f"local STATUSES = {{{', '.join(s.upper() for s in lifecycle.STATUSES)}}}"),
        ("NO_RECORD", f"local NO_RECORD = {_lua_string(lifecycle.NO_RECORD)}"),
        # A script that finds its message template gone refuses with TEMPLATE_REFUSED .. key .. TEMPLATE_GONE:
        # the prefix is templates.REFUSAL, which the clients read the refusal by.
        ("TEMPLATE_REFUSED", f"local TEMPLATE_REFUSED = {_lua_string(REFUSAL + ' ')}"),
        ("TEMPLATE_GONE", "local TEMPLATE_GONE = ' is not in Redis: store the message template and call again'"),
        ("EVENT_KEY", f"local EVENT_KEY = {_lua_string(event_key(''))}"),
        ("status_index", "local function status_index(status) return "
                         f"{_concat(index_key('@S@'), {'@S@': 'status'})} end"),
        ("route_index", "local function route_index(route, status) return "
                        f"{_concat(index_key('@S@', '@R@'), {'@S@': 'status', '@R@': 'route'})} end"),
        ("parked_set", "local function parked_set(route, digest) return "
                       f"{_concat(parked_key('@R@', '@D@'), {'@R@': 'route', '@D@': 'digest'})} end"),
        ("breaker_hash", "local function breaker_hash(route, digest) return "
                         f"{_concat(breaker_key('@R@', '@D@'), {'@R@': 'route', '@D@': 'digest'})} end"),
        ("lane_set", "local function lane_set(route, lane) return "
                     f"{_concat(lane_key('@R@', '@L@'), {'@R@': 'route', '@L@': 'lane'})} end"),
        ("lanes_hash", f"local function lanes_hash(route) return {_concat(lanes_key('@R@'), {'@R@': 'route'})} end"),
        ("order_counter", "local function order_counter(route) return "
                          f"{_concat(order_counter_key('@R@'), {'@R@': 'route'})} end"),
        ("pending_list", f"local function pending_list(route) return {_concat(pending_key('@R@'), {'@R@': 'route'})} end"),
        ("filling_flag", f"local function filling_flag(route) return {_concat(filling_key('@R@'), {'@R@': 'route'})} end"),
        ("route_queue", f"local function route_queue(route) return {_concat(queue_name('@R@'), {'@R@': 'route'})} end"),
        ("retry_schedule", f"local function retry_schedule(route) return {_concat(retry_key('@R@'), {'@R@': 'route'})} end"),
        ("worker_lease", f"local function worker_lease(worker) return {_concat(lease_key('@W@'), {'@W@': 'worker'})} end"),
        ("wake_mover", f"""-- `route` has something new on its retry schedule (or a breaker to look at) at `at`: if the route's
-- retry mover sleeps past that (scheduler.py: it left bus:mover:<route>:sleeps, its wake-up time), wake
-- it with a token on its wake list. The first such script takes the mark, so a wait gets one token.
local function wake_mover(route, at)
  local sleeps = {_concat(mover_sleeps_key('@R@'), {'@R@': 'route'})}
  local till = redis.call('GET', sleeps)
  if till and tonumber(at) < tonumber(till) then
    local wake = {_concat(wake_key('@R@'), {'@R@': 'route'})}
    redis.call('DEL', sleeps)
    redis.call('LPUSH', wake, '1')
    redis.call('PEXPIRE', wake, 60000)
  end
end"""),
        ("park_behind", """-- The event `id` (its record `record`) waits in `parked` (scored `now`) behind the breaker of `digest`
-- (breakers.py), off the route's retry schedule `schedule`: an ordered route's event a task took holds a
-- lease there (lane.lua).
local function park_behind(record, id, schedule, parked, digest, now)
  redis.call('ZADD', parked, now, id)
  redis.call('ZREM', schedule, id)
  redis.call('HSET', record, 'parked', digest)
end"""),
        ("may", f"""-- The rows of the lifecycle table this script does, 'from>to' (NO_RECORD: no record).
local MOVES = ' {moves} '
local function may(from, to)
  return string.find(MOVES, ' ' .. (from or NO_RECORD) .. '>' .. (to or NO_RECORD) .. ' ', 1, true) ~= nil
end"""),
        ("owned", """-- A caller that names its task ('' names none: the CLI, tests) may move an event whose record
-- names that task, or none at all (a record from before the field existed).
local function owned(task, caller) return caller == '' or not task or task == caller end"""),
        ("reindex", f"""-- Take the event out of the indexes of `from` (the status the script read) and into those of
-- `to`, scored by its received time.
local function reindex(id, route, received, from, to)
  if from and from ~= to then
    redis.call('ZREM', {_concat(index_key('@S@'), {'@S@': 'from'})}, id)
    redis.call('ZREM', {_concat(index_key('@S@', '@R@'), {'@S@': 'from', '@R@': 'route'})}, id)
  end
  if to then
    redis.call('ZADD', {_concat(index_key('@S@'), {'@S@': 'to'})}, received, id)
    redis.call('ZADD', {_concat(index_key('@S@', '@R@'), {'@S@': 'to', '@R@': 'route'})}, received, id)
  end
end"""),
        ("to_retrying", """-- The move park and hold_back share: a waiting event its caller may still move goes to retrying,
-- no message named. Returns nil when it moved, else why not: 'gone', the status the event is in
-- when the table has no move from it, or 'superseded' (another task moved it since the caller loaded it).
local function to_retrying(record, id, route, reason, caller)
  local current, task, received = unpack(redis.call('HMGET', record, 'status', 'task', 'received'))
  if not current then return 'gone' end
  if not may(current, RETRYING) then return current end
  if not owned(task, caller) then return 'superseded' end
  redis.call('HSET', record, 'status', RETRYING, 'last', reason, 'task', '')
  reindex(id, route, received, current, RETRYING)
end"""),
        ("own", """-- Name `task` in the records of those ids this script may hand over (may(status, status)); how many.
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
end"""),
    ]


def prelude(name: str, code: str = "") -> str:
    """What goes before script `name` whose Lua (with its libraries) is `code`: the definitions it
    uses, and those they use. Only those: the prelude runs on every call of the script, and each
    function it defines is made anew each time (~0.3 us of Redis CPU apiece)."""
    definitions = _definitions(name)
    used: set[str] = set()
    text = re.sub(r"--[^\n]*", "", code)  # what comments mention is not used
    while True:
        found = {n for n, _ in definitions if n not in used and re.search(rf"\b{n}\b", text)}
        if not found:
            break
        used |= found
        text = re.sub(r"--[^\n]*", "", "\n".join(lua for n, lua in definitions if n in found))
    chosen = [lua for n, lua in definitions if n in used]
    return "\n".join(["-- Prelude from bus/journal/scripts.py (names from bus/lifecycle.py and bus/journal/keys.py)."]
                     + chosen) + "\n"


@cache
def load(name: str, *libraries: str, package: str = __package__) -> str:
    """Script `name` (a file in lua/) with its prelude and, before it, the `libraries` it calls (files
    of Lua functions shared by scripts). Read once per process. `package` is whose lua/ folder holds
    them: the journal's, or bus.broker's (its scripts on kombu's keys)."""
    folder = _LUA if package == __package__ else resources.files(package) / "lua"
    code = "\n".join([(folder / lib).read_text() for lib in libraries] + [(folder / name).read_text()])
    return prelude(name, code) + code
