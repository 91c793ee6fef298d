"""Lost-task recovery reads where waiting events are with few round trips, however big the keyspace: every
event's record and attempts are keys, and the few it looks for (each route's schedule, pending list, queue,
lanes) are found with SCAN. At Redis's default COUNT of 10 that was a round trip per 10 keys, per scan."""
from __future__ import annotations

import uuid

from bus import journal, recovery

NOISE = 20_000


def test_a_pass_over_a_big_keyspace_takes_few_scans_and_still_finds_where_events_wait(own_redis):
    client = own_redis.client()
    waiting = [str(uuid.uuid4()) for _ in range(3)]
    journal.accept(client, [journal.NewEvent(i, "r.x", "r", b"{}", 1.0) for i in waiting])
    pipe = client.pipeline(transaction=False)
    for n in range(NOISE):  # stands in for other events' records, attempts and the rest
        pipe.set(f"noise:{n}", b"x")
    pipe.execute()
    client.config_resetstat()

    assert recovery.missing_tasks(client) == set(), "each accepted event is on its pending list or in a message"

    scans = client.info("commandstats").get("cmdstat_scan", {}).get("calls", 0)
    # Five scans (schedules, breakers' parked events, lanes, pending lists, queues) of ~NOISE keys each.
    assert 0 < scans <= 5 * (NOISE // 1000 + 3), scans
    client.delete(journal.keys.pending_key("r"), journal.queue_name("r"))
    assert recovery.missing_tasks(client) == set(waiting), "with neither, every one is missing"
