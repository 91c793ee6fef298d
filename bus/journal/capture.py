"""Journaling a request `bus proxy` captured: its record and indexes, with no task message (the proxy sends it)."""
from __future__ import annotations

from typing import Any

from .keys import COUNTERS, event_key, index_key
from .store import QUEUED, NewEvent

# A captured request is journaled as queued before the proxy forwards it, and its live attempt is
# recorded (transitions.record_attempt_call) once the upstream has answered. It goes on no pending
# list: the proxy is its first sending. Should the proxy die in between, the request stays queued
# with no task anywhere, and a worker's lost-task recovery sends it again with the same id: a
# repeat, never a loss. The record names no task (''), so no stray message sends it.
# KEYS: the event, the queued index, the route's queued index, the counters hash.
# ARGV: id, tag, route, body, headers, request, received, status, the accepted counter's field,
# the uncaptured counter's field and how many requests this proxy forwarded uncaptured since it
# last could tell Redis ('0' for none).
CAPTURE_SCRIPT = """
local id, received = ARGV[1], ARGV[7]
redis.call('HSET', KEYS[1], 'tag', ARGV[2], 'route', ARGV[3], 'body', ARGV[4], 'headers', ARGV[5],
           'request', ARGV[6], 'received', received, 'status', ARGV[8], 'task', '')
redis.call('ZADD', KEYS[2], received, id)
redis.call('ZADD', KEYS[3], received, id)
redis.call('HINCRBY', KEYS[4], ARGV[9], 1)
if ARGV[11] ~= '0' then redis.call('HINCRBY', KEYS[4], ARGV[10], ARGV[11]) end
return 1
"""


def capture_call(event: NewEvent, request: bytes, uncaptured: int = 0) -> tuple[list[str], list[Any]]:
    """KEYS and ARGV of CAPTURE_SCRIPT for one captured request (`request`: captured.Request's JSON)."""
    keys = [event_key(event.id), index_key(QUEUED), index_key(QUEUED, event.route), COUNTERS]
    args = [event.id, event.tag, event.route, event.body, event.headers, request, repr(event.received), QUEUED,
            f"accepted:{event.route}", f"uncaptured:{event.route}", uncaptured]
    return keys, args
