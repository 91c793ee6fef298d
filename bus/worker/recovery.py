"""Recovery of lost delivery tasks: requeue waiting events whose task Redis no longer holds.

kombu's Redis transport is not atomic where it hands a task to a worker: BRPOP takes the message
off the queue, and only the worker's next round trip records it in the `unacked` hash that the
visibility timeout restores from. If Redis is killed (or the worker's main process is) between
the two, the task is gone while the journal still says the event is queued or retrying. Nothing
in Celery notices; the fault test that kills Redis under load lost an event this way.

So whenever a worker's consumer (re)connects (start-up, and after every broker reconnect, which
is when such a crash shows) it compares the journal with the queues and the unacked hash, twice a
few seconds apart so that a task merely between BRPOP and unacked is not taken for lost, and
queues a new task for each event found in neither pass. A false positive costs a repeated attempt
with the same X-Request-Id, never a loss. The scan reads every queued task: O(backlog), done only
on (re)connect, by one worker at a time.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis
from celery import bootsteps

from .. import journal, settings
from ..broker import unacked
from ..broker.messages import event_ids_of, new_message

log = logging.getLogger("bus.recovery")

PAUSE = 3.0  # seconds between the two passes; a task spends microseconds between BRPOP and unacked
# One recovery at a time. A worker killed while holding the lock blocks the others only this long;
# they wait for it rather than skip, since the crash that lost a task may be the one they saw.
LOCK_SECONDS = 120


def missing_tasks(client: redis.Redis) -> set[str]:
    """Waiting events that no task in Redis delivers (one pass; may include tasks in transit)."""
    waiting = journal.waiting_ids(client)
    if not waiting:
        return set()
    # In the order events move (lane, pending list, message): one that moves on meanwhile is found
    # again further on. Lane waiters first: the next one of a lane goes onto the pending list.
    waiting -= journal.lane_waiting_ids(client)
    waiting -= journal.scheduled_ids(client) | set(journal.pending_ids(client))
    waiting -= {i for m in journal.task_messages(client) for i in event_ids_of(m)}
    waiting -= {i for m in unacked.unacked_messages(client) for i in event_ids_of(m)}
    # Delivered (or dead) while this pass read the places above: not lost, however it looked.
    return journal.still_waiting(client, waiting) if waiting else waiting


def recover(client: redis.Redis, pause: float = PAUSE, asked_at: float | None = None) -> list[str]:
    """Requeue every event whose task is lost; returns their ids.

    `asked_at` (Redis's clock) is when the crash that may have lost a task was seen: a recovery
    whose first pass began after it has found all such tasks, so when many workers reconnect
    after one Redis restart the first scans the backlog and the rest skip."""
    holder = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
    deadline = time.monotonic() + LOCK_SECONDS + 30
    while not journal.recovery_lock(client, holder, LOCK_SECONDS):
        if time.monotonic() > deadline:
            log.warning("lost-task recovery skipped: another worker held the lock for %ds", LOCK_SECONDS + 30)
            return []
        time.sleep(2)
    try:
        last = journal.last_recovery(client)
        if asked_at is not None and last is not None and last >= asked_at:
            log.info("lost-task recovery skipped: another worker's began after this one was asked for")
            return []
        began = journal.redis_time(client)
        suspects = missing_tasks(client)
        if not suspects:
            journal.recovery_done(client, began)
            return []
        time.sleep(pause)
        requeued = []
        for event_id in sorted(suspects & missing_tasks(client)):
            event = journal.load(client, event_id)
            if event is None:
                continue
            # The event's record names the new message, so the task thought lost leaves it alone
            # should it come back after all. Marked as kombu marks what it restores: redelivered
            # tasks check each event again right before sending it.
            message = new_message([(event_id, event["tag"], event["attempts"] + 1)],
                                  journal.queue_name(event["route"]), redelivered=True)
            if journal.requeue_lost(client, event_id, event["route"], message):
                requeued.append(event_id)
        if requeued:
            log.warning("requeued %d event(s) whose delivery task was lost in a crash: %s",
                        len(requeued), " ".join(requeued[:20]) + (" ..." if len(requeued) > 20 else ""))
        journal.recovery_done(client, began)
        return requeued
    finally:
        journal.recovery_unlock(client, holder)


def _recover_logged(why: str) -> None:
    config = settings.load()
    try:
        client = journal.connect(config.worker_redis, max(config.redis_timeout, 10.0))
        # At every (re)connect, which covers the first start after an upgrade: two round trips.
        journal.forget_retired(client)
        recover(client, asked_at=journal.redis_time(client))
    except journal.REDIS_DOWN as exc:
        # The consumer reconnects (and so runs this again) once Redis is back.
        log.warning("lost-task recovery (%s) skipped, Redis did not answer: %s", why, exc)
    except Exception:
        log.exception("lost-task recovery (%s) failed", why)


def recover_in_background(why: str) -> None:
    """Run recover() in a thread of its own: its two passes take a few seconds."""
    threading.Thread(target=_recover_logged, args=(why,), name="bus-recovery", daemon=True).start()


class RecoverLostTasks(bootsteps.StartStopStep):
    """Consumer step: start() runs on every (re)connection of the worker to the broker."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def start(self, c: object) -> None:
        recover_in_background("the worker connected to Redis")
