"""An event's lifecycle: every status, every move between them, who makes it and the script that does it.

Read this table before any script. The rules it keeps:

- An event is in exactly one status while its record is in Redis, and in no status before it is
  accepted or after it is purged, archived or expired (NO_RECORD).
- Every move is one Lua script in bus/journal/lua/ that reads the event's current status (and,
  where the caller is a task, the task the record names) itself and refuses a move that is not a
  row of this table. A caller's copy of the event is never trusted: between loading it and
  moving it, another copy of the same message, the retry mover, a replay or a purge may have moved it.
- A move whose target is SAME keeps the status and names a new task message in the record
  (field `task`): the event changes hands, not state.
- Status names exist here only. bus/journal/scripts.py puts them (and each script's rows of this
  table) in front of every script as Lua constants when it loads the script, so no Lua file types
  a status name.

The table is pure data: the journal enforces it, docs/design.md shows it (a test keeps the two equal).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

QUEUED, RETRYING, DELIVERED, DEAD = "queued", "retrying", "delivered", "dead"
STATUSES = (QUEUED, RETRYING, DELIVERED, DEAD)
# Not a status: the record does not exist (not accepted yet; or purged, archived, expired).
NO_RECORD = "-"
# Not a status: the move keeps the status it found and names the task message that sends it next.
SAME = "="


@dataclass(frozen=True)
class Move:
    """One row: `name` moves an event from any of `sources` to any of `targets`, made by `by`,
    done by `scripts` (file names in bus/journal/lua/). `owner`: the script also refuses a caller
    task that is not the one the record names."""

    name: str
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    by: str
    scripts: tuple[str, ...]
    owner: bool = False
    why: str = ""


WAITING = (QUEUED, RETRYING)


# What a delivery of one event came to (bus/worker/verdict.py says how each is reached): two are the
# statuses it ends in, the others name why it was not sent. A StrEnum, so a verdict reads as its value in
# log lines, a task's summary and a copy's journaled record (which `bus replay --to --wait` reads).
class Verdict(StrEnum):
    DELIVERED = DELIVERED  # accepted by the endpoint, now or by an earlier copy of the message
    RETRY = "retry"  # an attempt failed: on the retry schedule for the next one
    DEAD = DEAD  # dead-lettered, now or earlier: waits for a replay
    WAITING = "waiting"  # not sent: parked behind its endpoint's open breaker, or due on the schedule
    ERROR = "error"  # not sent: parked after an internal error (the worker log says which)
    SUPERSEDED = "superseded"  # not sent: another task message sends it now
    GONE = "gone"  # not sent: its record is gone (expired or purged) since the task loaded it
    MISSING = "missing"  # not sent: no record when the task loaded its events
    HANDED_OFF = "handed_off"  # not sent by this task: handed to a new message (a task's summary counts them)


MOVES: tuple[Move, ...] = (
    Move("accept", (NO_RECORD,), (QUEUED,), "ingress (HTTP, forward, emit, producer spools)", ("accept.lua",),
         why="an id already journaled is skipped: accepting is idempotent by id"),
    Move("capture", (NO_RECORD,), (QUEUED,), "ingress (bus proxy)", ("capture.lua",),
         why="a captured request is journaled before the proxy forwards it"),
    Move("group", (QUEUED,), (SAME,), "ingress (accept), worker (a task starts), scheduler (idle route)",
         ("accept.lua", "refill.lua"), why="a task message takes the next group off the pending list"),
    Move("record_attempt", WAITING, (DELIVERED, RETRYING, DEAD), "worker; ingress (bus proxy's live attempt)",
         ("record_attempt.lua",),
         why="an attempt that went out is recorded whichever task the record names (a copy then leaves it); "
             "a failed probe's retry due before its breaker half-opens waits in the breaker's parked set"),
    Move("next_in_lane", (QUEUED,), (SAME,), "worker (the event before it is recorded), CLI (bus purge of that one)",
         ("record_attempt.lua", "purge.lua"),
         why="an ordered route's event goes out once the one before it in its order key is delivered, dead or purged"),
    Move("lane_lease", (QUEUED,), (SAME,), "scheduler (retry mover)", ("release.lua",),
         why="an ordered route's event a task took (lane.lua) and did not send before its lease ran out"),
    Move("park", WAITING, (RETRYING,), "worker (an internal error)", ("park.lua",), owner=True,
         why="wait on the retry schedule without an attempt"),
    Move("hold_back", WAITING, (RETRYING,), "worker (its endpoint's breaker open)", ("hold_back.lua",), owner=True,
         why="wait in the endpoint's parked set (on the schedule if the breaker closed meanwhile)"),
    Move("send_probe", (RETRYING,), (SAME,), "scheduler (a half-open breaker)", ("send_probe.lua",),
         why="one held-back event goes out as the endpoint's probe"),
    Move("release", (RETRYING,), (SAME,), "scheduler (retry mover)", ("release.lua",),
         why="a due retry leaves the schedule in a message of its own"),
    Move("hand_off", WAITING, (SAME,), "worker (a group out of time; an ordered route's task following a lane)",
         ("hand_off.lua",), owner=True,
         why="the rest of a slow group goes to a new message; so do the other lanes' heads of a task that follows one"),
    Move("requeue_lost", WAITING, (SAME,), "recovery (lost-task recovery)", ("requeue_lost.lua",),
         why="a waiting event whose message is nowhere in Redis gets a copy"),
    Move("requeue", STATUSES, (QUEUED,), "CLI (bus replay), API (POST /events/replay)", ("requeue.lua",),
         why="refused when the event is no longer in the status the replay listed"),
    Move("purge", STATUSES, (NO_RECORD,), "CLI (bus purge)", ("purge.lua",),
         why="refused when the event is no longer in the status the purge listed"),
    Move("forget_archived", (DELIVERED,), (NO_RECORD,), "archive mover", ("forget_archived.lua",),
         why="refused when attempts or copies changed since the archive wrote it"),
    Move("expire", (DELIVERED,), (NO_RECORD,), "Redis (retention)", (),
         why="no script: record_attempt.lua sets the expiry when it records a delivery"),
)


# The scripts that put something on a route's retry schedule (or a breaker on its open index) for a time of
# their own choosing, or leave pending events for the mover's refill: each also wakes the route's retry
# mover (worker/scheduler.py) when it sleeps past that time (wake_mover in journal/scripts.py's prelude,
# bus:wake:<route> in journal/keys.py). The mover's own moves (release, send_probe, the breaker's look)
# need none: it plans its next sleep after them. Moves that only take events off the schedule (requeue,
# purge) push nothing: the mover then wakes at the time it planned for them, for nothing, once. lane.lua is the library of
# record_attempt.lua, accept.lua and purge.lua; breaker_fail.lua counts a breaker's failures and opens it.
WAKES_MOVER: tuple[str, ...] = ("record_attempt.lua", "park.lua", "hold_back.lua", "lane.lua", "breaker_fail.lua")


def pairs(scripts: str | None = None) -> frozenset[tuple[str, str]]:
    """Every (from, to) the table allows, or only those of rows done by the script file `scripts`.
    A SAME target is spelled out as (status, status)."""
    out = set()
    for move in MOVES:
        if scripts is not None and scripts not in move.scripts:
            continue
        for source in move.sources:
            for target in move.targets:
                out.add((source, source if target == SAME else target))
    return frozenset(out)


def allowed(source: str, target: str) -> bool:
    """Whether any row of the table moves an event from `source` to `target` (SAME: source)."""
    return (source, source if target == SAME else target) in pairs()


def table_markdown() -> str:
    """The table as docs/design.md shows it."""
    def cell(states: tuple[str, ...]) -> str:
        words = {NO_RECORD: "(no record)", SAME: "(same status, new task)"}
        return ", ".join(words.get(s, s) for s in states)

    lines = ["| move | from | to | made by | script | checks the task | note |",
             "|---|---|---|---|---|---|---|"]
    for m in MOVES:
        lines.append(f"| `{m.name}` | {cell(m.sources)} | {cell(m.targets)} | {m.by} | "
                     f"{', '.join(f'`{s}`' for s in m.scripts) or '(Redis EXPIRE)'} | {'yes' if m.owner else 'no'} | {m.why} |")
    return "\n".join(lines)
