"""The journal: what the bus keeps in Redis about events, and the only code that names Redis keys.

- keys.py         the key layout: every key name is built there and nowhere else
- store.py        the connection, our Lua scripts, reading and decoding event records
- grouping.py     accepting events: the record, the pending list and the task messages made from it
- capture.py      journaling a request `bus proxy` captured (no task message: the proxy sends it)
- transitions.py  an event's moves after that: attempts, the retry schedule, replays
- scripts.py      loading the Lua of lua/ (one file per move of bus/lifecycle.py's table) with Python's names
- breakers.py     circuit breakers per endpoint: failures, events held back, probes, release
- counters.py     counters, latency and per-route snapshots for /metrics and `bus stats`
- listing.py      listing, sweeping and purging through the status indexes
- lost.py         where a waiting event's task can be, for lost-task recovery
- memory.py       whether Redis can take new events: the memory high mark, /healthz's check
- archiving.py    delivered events leaving Redis for the archive (bus/archive/): due ids, guarded delete
- mover_sleep.py  the retry mover's sleep until something is due, and its wake-up by the scripts that schedule
- templates.py    the task message templates kept in Redis by digest, and storing one a script found gone
- values.py       the delivery path's frozen values: an Event as loaded, an Attempt as journaled

Callers use `from bus import journal` and the names below.
"""
from __future__ import annotations

from ..lifecycle import DEAD, DELIVERED, QUEUED, RETRYING, STATUSES
from . import breakers
from .archiving import (
    Due,
    archive_state,
    archived_counts,
    claim_archive_mover,
    forget_archived,
    in_redis,
    let_go_archive_mover,
    overdue,
    plan_archive_sleep,
    read_due,
    set_archive_state,
)
from .capture import CAPTURE_SCRIPT, capture_call
from .counters import (
    LATENCY_BUCKETS,
    SLOT,
    SLOTS_KEPT,
    RouteSnapshot,
    backlog,
    count,
    count_refused,
    counters,
    latency,
    snapshot,
)
from .grouping import (
    ACCEPT_FRAMES_SCRIPT,
    ACCEPT_SCRIPT,
    FILLING_MS,
    SpoolMark,
    accept,
    accept_batches,
    accept_call,
    accept_copies,
    accept_frames,
    accept_packed,
    accepted_ids,
    frames_call,
    lane_group,
    load_many,
    refill_if_idle,
)
from .keys import (
    ARCHIVE_MOVER,
    ARCHIVE_STATE,
    COUNTERS,
    KOMBU_UNACKED,
    RECOVERY_LOCK,
    attempts_key,
    breaker_key,
    copies_key,
    event_key,
    filling_key,
    held_key,
    index_key,
    latency_key,
    mover_key,
    pending_key,
    queue_name,
    retry_key,
    slot_key,
    spool_mark_key,
)
from .listing import _cursor_bounds as cursor_bounds
from .listing import (
    find,
    iter_matching,
    purge,
    sweep,
)
from .lost import (
    lane_waiting_ids,
    last_recovery,
    pending_ids,
    recovery_done,
    recovery_lock,
    recovery_unlock,
    redis_time,
    requeue_lost,
    scheduled_ids,
    still_waiting,
    task_messages,
    waiting_ids,
)
from .memory import READING, MemoryMark, check_room, check_writable
from .retired import forget_retired
from .store import (
    DEFAULT_RETENTION,
    REDIS_DOWN,
    RESPONSE_KEEP,
    SUMMARY_FIELDS,
    Idempotency,
    NewEvent,
    Page,
    attempts,
    connect,
    last_copies,
    load,
    readable,
    show,
    summaries,
    unavailable,
)
from .templates import MissingTemplate, stored_async
from .transitions import (
    RECORD_ATTEMPT_SCRIPT,
    claim_mover,
    copy_record,
    drop_scheduled,
    due,
    enqueue,
    hand_off,
    park,
    recheck,
    recheck_events,
    record_attempt,
    record_attempt_call,
    record_attempt_taking,
    record_copy,
    refusal,
    release,
    requeue,
    status_class,
)
from .values import Attempt, Event

__all__ = [
    "STATUSES", "COUNTERS", "KOMBU_UNACKED", "RECOVERY_LOCK", "attempts_key", "breaker_key",
    "copies_key", "event_key", "filling_key", "index_key", "latency_key", "mover_key", "pending_key",
    "queue_name", "retry_key", "slot_key", "spool_mark_key", "DEAD", "DEFAULT_RETENTION", "DELIVERED", "QUEUED", "REDIS_DOWN",
    "RESPONSE_KEEP", "RETRYING", "SUMMARY_FIELDS", "attempts", "connect", "load", "Idempotency", "NewEvent", "Page", "show",
    "summaries", "unavailable", "ACCEPT_SCRIPT", "FILLING_MS", "SpoolMark", "accept", "accept_batches", "accept_call",
    "accept_copies", "accepted_ids", "lane_group", "load_many", "ACCEPT_FRAMES_SCRIPT", "accept_frames", "frames_call",
    "accept_packed",
    "refill_if_idle", "breakers", "claim_mover", "drop_scheduled", "due", "enqueue",
    "hand_off", "park", "record_attempt", "record_copy", "copy_record", "recheck", "recheck_events", "refusal", "release", "requeue",
    "status_class", "LATENCY_BUCKETS", "SLOT", "SLOTS_KEPT", "backlog", "count", "count_refused", "counters",
    "latency", "RouteSnapshot", "snapshot", "find", "iter_matching", "purge", "sweep", "forget_retired", "pending_ids",
    "recovery_lock", "recovery_unlock", "requeue_lost", "last_recovery", "recovery_done", "redis_time", "held_key",
    "scheduled_ids", "still_waiting", "lane_waiting_ids", "task_messages", "waiting_ids",
    "READING", "MemoryMark", "check_room", "check_writable",
    "last_copies", "CAPTURE_SCRIPT", "capture_call", "RECORD_ATTEMPT_SCRIPT", "record_attempt_call", "record_attempt_taking",
    "ARCHIVE_MOVER", "ARCHIVE_STATE", "archive_state", "archived_counts", "claim_archive_mover",
    "Due", "forget_archived", "in_redis", "let_go_archive_mover", "overdue", "plan_archive_sleep", "read_due",
    "set_archive_state", "cursor_bounds",
    "readable", "Attempt", "Event", "MissingTemplate", "stored_async",
]
