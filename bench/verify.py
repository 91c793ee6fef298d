"""Count what arrived: accepted ids (from the producer) against ids seen by the receiver or queued in Redis."""
from __future__ import annotations

import time
from pathlib import Path

from bus import journal

from .procs import Cluster


def read_ids(path: Path) -> dict[str, float]:
    """'id send-time' lines -> {id: send-time}."""
    out: dict[str, float] = {}
    with open(path) as f:
        for line in f:
            event_id, sent = line.split()
            out[event_id] = float(sent)
    return out


def wait_delivered(cluster: Cluster, expected: int, timeout: float, poll: float = 0.2) -> bool:
    """Wait until the receiver has seen `expected` distinct ids; False after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cluster.assert_running()
        if cluster.received()["unique"] >= expected:
            return True
        time.sleep(poll)
    return False


def delivery(cluster: Cluster, accepted: dict[str, float], received: dict[str, float], receiver_stats: dict,
             sent: int) -> dict:
    """The event counts every delivery scenario reports.

    An accepted id the receiver never saw is `late` when the journal still has it
    queued or retrying (the wait ran out: a collapse, not a loss) and `lost`
    otherwise (journaled delivered or dead without arriving, or gone).
    """
    missing = [i for i in accepted if i not in received]
    client = cluster.redis()
    late = 0
    for event_id in missing:
        record = journal.load(client, event_id)
        late += bool(record and record["status"] in (journal.QUEUED, journal.RETRYING))
    return {
        "sent": sent,
        "accepted": len(accepted),
        "delivered": len(accepted) - len(missing),
        "late": late,
        "lost": len(missing) - late,
        "duplicates": receiver_stats["duplicates"],
        "unexpected": sum(1 for i in received if i not in accepted),
    }


def queued(cluster: Cluster, route: str, accepted: dict[str, float], sent: int, before: dict) -> dict:
    """For accept-only scenarios: every accepted id must be journaled as queued (a task may carry several)."""
    client = cluster.redis()
    pipe = client.pipeline(transaction=False)
    for event_id in accepted:
        pipe.hget(journal.event_key(event_id), "status")  # journal.keys owns the key layout; the bench borrows it
    statuses = pipe.execute()
    journaled = sum(1 for s in statuses if s == journal.QUEUED.encode())
    return {
        "sent": sent,
        "accepted": len(accepted),
        "queued": journaled,
        "lost": len(accepted) - journaled,
        "duplicates": 0,
        "unexpected": 0,
        "tasks": queue_depth(cluster, route)["queue"] - before["queue"],
    }


def queue_depth(cluster: Cluster, route: str) -> dict:
    client = cluster.redis()
    return {"queue": client.llen(journal.queue_name(route)), "queued": journal.count(client, journal.QUEUED)}
