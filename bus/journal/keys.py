"""The journal's Redis key layout: every key name the bus uses is built here and nowhere else.

Keys (every name is built here and nowhere else):
- bus.<route>                    Celery queue of the route (a kombu Redis list)
- bus:event:<id>                 hash: tag, route, body, headers, received, status,
                                 attempts, round (attempts before the last replay), last,
                                 parked (the <ep> whose bus:parked set it was last put in),
                                 task (the task message that sends its next attempt; '' when none does),
                                 lane and seq (an ordered route's: its lane and place in acceptance order),
                                 request (a request bus proxy captured: JSON of its method, path,
                                 query and the headers kept for replay; its body is `body`)
- bus:event:<id>:attempts        list of JSON attempt records, oldest first
- bus:event:<id>:copies          list of JSON records of replays sent elsewhere (--to)
- bus:status:<status>            sorted set of ids by received time, one per status
- bus:route:<route>:<status>     the same per route (an event is in exactly one status of each;
                                 a listing of any status merges the four)
- bus:pending:<route>            list of "<id> <tag>" accepted and not yet in a task message (FIFO)
- bus:filling:<route>            set while a task message of the route is queued that will take the
                                 next group off the pending list when it starts (expires)
- bus:retry:<route>              sorted set of ids waiting for their next attempt, by due time
- bus:breaker:<route>:<ep>       hash: endpoint, failures, failing_since, step, open_until, since: the circuit
                                 breaker of one endpoint of the route (<ep>: endpoints.EndpointKey.digest of the
                                 rendered origin and path, counting its failed answers and timeouts; or of the
                                 origin alone, no path, counting failures to connect); expires BREAKER_TTL after
                                 its last failure, and is deleted when the endpoint answers (an origin's: any answer)
- bus:breakers:<route>           sorted set of <ep> whose breaker has opened, by when the mover next looks at it
                                 (open_until, or the probe's deadline); left only once nothing waits behind it
- bus:failing:<route>            sorted set of <ep> with a breaker, by its last failure: what stats list;
                                 members older than their breaker's lifetime are trimmed
- bus:parked:<route>:<ep>        sorted set of ids held back by that endpoint's open breaker, by when they were
                                 parked (released all at once, to the retry schedule, when it closes)
- bus:order:<route>              counter of an ordered route: each accepted event's `seq` (acceptance order)
- bus:lane:<route>:<lane>        sorted set of an ordered route's undone events of one lane, by `seq`; <lane> is
                                 "<destination>:<order key>" (destination '' for the route's own endpoint)
- bus:lanes:<route>              hash: <lane> -> the id of its head, the one event of the lane that is out (pending,
                                 in a message, on the retry schedule or held back); the others wait in the lane
- bus:mover:<route>              which worker moves the route's due retries right now (expires)
- bus:mover:<route>:sleeps       set while that mover waits on its wake list: until when (its clock); a script
                                 that schedules something earlier (lifecycle.WAKES_MOVER) deletes it and pushes
- bus:wake:<route>               list the mover BLPOPs while nothing is due (one token per wake-up; expires)
- bus:counters                   hash of ever-growing counters for /metrics, field "<kind>:<route>[:<label>]"
- bus:latency:<route>            hash: accept-to-2xx histogram: count per bucket (not cumulative), sum, count
- bus:delivered:<route>:<slot>   deliveries in one 10-second slot (expires after an hour), for `bus stats`
- bus:recovery:lock              held by the worker running lost-task recovery (expires)
- bus:recovery:done              when the last complete lost-task recovery began (Redis's clock)
- bus:idempotency:<tag>:<key>    "<digest> <id>,<id>,..." of the first request sent with an
                                 Idempotency-Key (or forward chunk id) for the tag (expires)
- bus:spool:<spool>              hash: route -> the place in a producer's spool (bus/spool/) up to which
                                 Redis took that route's events (its high-water mark; expires
                                 BUS_IDEMPOTENCY_WINDOW after the spool's last send)
- bus:template:<digest>          a task message template (broker/messages.py's group_template of one route's
                                 queue) named by its digest, so a changed template is a new key; the scripts
                                 that queue a message fill it in (journal/templates.py; expires, stored again
                                 on the refusal of a call that finds it gone)
- bus:healthz                    written by GET /healthz to see that Redis takes writes (expires)
- bus:workers                    hash: worker (host:pid) -> when it registered; the workers whose unacked
                                 tasks another may hand back once their lease is gone
- bus:lease:<worker>             set while the worker runs (expires within seconds of its death)
- bus:held:<worker>              set of kombu delivery tags the worker holds unacked (written with
                                 kombu's own unacked entry, removed with it)
- bus:reclaim:<worker>           held by the worker handing a dead one's tasks back (expires)
- bus:archive:mover              which worker moves delivered events to the archive right now (expires)
- bus:archive:state              hash: up ('1'/'0'), since, error: the archive as the mover last found it
- unacked, unacked_index         kombu's hash of tasks handed to workers and not acked yet, and their
                                 delivery times (read; a dead worker's entries are handed back)
- bus:all, bus:route:<route>:all retired: every event id by received time, written before an event
                                 had two index entries instead of four (0975d0c) and read by
                                 nothing since; journal/retired.py removes them after an upgrade

A fan-out route's destination is a route of its own for every key above: <route> is then
"<route>.<destination>" (queue bus.<route>.<destination>), and <id> its copy's "<event id>.<destination>";
its Idempotency-Key record is bus:idempotency:<tag>:<key>.<destination> (routes.copy_id).

Counters are bumped in the same transaction as the transition they count, so
/metrics never disagrees with the journal, whatever process made the change.

Like rq's registries, each state is a sorted set scored by time, so a filtered
listing reads only its own set, and reading cleans out what retention expired.
"""
from __future__ import annotations

COUNTERS = "bus:counters"
HEALTH_PROBE = "bus:healthz"


def queue_name(route: str) -> str:
    return f"bus.{route}"


def event_key(event_id: str) -> str:
    return f"bus:event:{event_id}"


def attempts_key(event_id: str) -> str:
    return f"bus:event:{event_id}:attempts"


def copies_key(event_id: str) -> str:
    return f"bus:event:{event_id}:copies"


def pending_key(route: str) -> str:
    return f"bus:pending:{route}"


def filling_key(route: str) -> str:
    return f"bus:filling:{route}"


def retry_key(route: str) -> str:
    return f"bus:retry:{route}"


def order_counter_key(route: str) -> str:
    return f"bus:order:{route}"


def lane_name(order_key: str, destination: str = "") -> str:
    """The lane of an order key: order is kept per (route, destination, key)."""
    return f"{destination}:{order_key}"


def lane_key(route: str, lane: str) -> str:
    return f"bus:lane:{route}:{lane}"


def lanes_key(route: str) -> str:
    return f"bus:lanes:{route}"


def mover_key(route: str) -> str:
    return f"bus:mover:{route}"


def mover_sleeps_key(route: str) -> str:
    return f"bus:mover:{route}:sleeps"


def wake_key(route: str) -> str:
    return f"bus:wake:{route}"


def breaker_key(route: str, endpoint: str) -> str:
    """`endpoint` is an endpoints.EndpointKey digest."""
    return f"bus:breaker:{route}:{endpoint}"


def open_breakers_key(route: str) -> str:
    return f"bus:breakers:{route}"


def failing_key(route: str) -> str:
    return f"bus:failing:{route}"


def parked_key(route: str, endpoint: str) -> str:
    return f"bus:parked:{route}:{endpoint}"


def latency_key(route: str) -> str:
    return f"bus:latency:{route}"


def slot_key(route: str, slot: int) -> str:
    return f"bus:delivered:{route}:{slot}"


def idempotency_key(tag: str, key: str) -> str:
    return f"bus:idempotency:{tag}:{key}"


def spool_mark_key(spool: str) -> str:
    return f"bus:spool:{spool}"


def template_key(digest: str) -> str:
    return f"bus:template:{digest}"


def index_key(status: str, route: str | None = None) -> str:
    return f"bus:route:{route}:{status}" if route else f"bus:status:{status}"


# Retired index sets (see above): only ever removed. "all" is no status, so no index_key is one of them.
RETIRED_ALL = "bus:all"


def retired_route_all_key(route: str) -> str:
    return f"bus:route:{route}:all"


# kombu's hash of the tasks handed to workers and not acked yet (lost-task recovery reads it),
# and the lock that keeps recovery to one worker at a time.
KOMBU_UNACKED = "unacked"
KOMBU_UNACKED_INDEX = "unacked_index"
RECOVERY_LOCK = "bus:recovery:lock"
RECOVERY_DONE = "bus:recovery:done"
WORKERS = "bus:workers"
ARCHIVE_MOVER = "bus:archive:mover"
ARCHIVE_STATE = "bus:archive:state"


def lease_key(worker: str) -> str:
    return f"bus:lease:{worker}"


def held_key(worker: str) -> str:
    return f"bus:held:{worker}"


def reclaim_key(worker: str) -> str:
    return f"bus:reclaim:{worker}"
