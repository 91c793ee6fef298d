"""Issue 19, `ordered = true`: events of one order key reach the endpoint in the order they were
accepted, across two pool processes, retries, a SIGKILLed worker and replays; a key whose event waits
to be retried holds back only its own later events.

Real parts: a redis-server of the test's own, `bus worker` processes (prefork, two pool processes),
an HTTP receiver on 127.0.0.1 that records arrival order."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import orjson
import pytest

from bus import intake, journal
from bus.errors import InvalidBody
from conftest import wait_until
from faultkit import FaultBus, make_fault_bus, wait_group_gone

pytestmark = [pytest.mark.integration]

VISIBILITY = 30
BY_TAG = """
match = "ord.*"
endpoint = "{receiver}/ord/${tag[1]}"
ordered = true
open_timeout = 1
read_timeout = 4
retry_max_interval = 1
"""
# Keyed by a record field, one URL for every key: only the bus's lanes can keep the order.
BY_FIELD = """
match = "acct.*"
endpoint = "{receiver}/acct"
ordered = true
order_key = "account"
open_timeout = 1
read_timeout = 4
retry_max_interval = 1
"""
DYING = """
match = "dies.*"
endpoint = "{receiver}/dies/${tag[1]}"
ordered = true
max_attempts = 1
"""


@pytest.fixture(scope="module")
def ordered_bus(tmp_path_factory):
    bus = make_fault_bus(tmp_path_factory.mktemp("ordered"), {"ord": BY_TAG, "acct": BY_FIELD, "dies": DYING},
                         VISIBILITY)
    try:
        bus.worker()
        yield bus
    finally:
        bus.close()


def arrivals(bus: FaultBus, path: str, key: str = "") -> list[int]:
    """The `n` of each request to `path` in arrival order (those of record field account == key, if given)."""
    bodies = [orjson.loads(r.body) for r in bus.receiver.to(path)]
    return [b["n"] for b in bodies if not key or b.get("account") == key]


def overtaken(sequence: list[int]) -> int:
    """Arrivals of an event after a later-accepted one of the same key had arrived (repeats are not)."""
    count, highest = 0, -1
    for n in sequence:
        if n < highest:
            count += 1
        highest = max(highest, n)
    return count


def accept_interleaved(bus: FaultBus, keys: list[str], per_key: int, batch: int, record) -> list[str]:
    """Accept `per_key` events for each key, `batch` at a time, the keys taking turns."""
    client, ids = bus.intake(), []
    for start in range(0, per_key, batch):
        for key in keys:
            tag, records = record(key, range(start, min(start + batch, per_key)))
            ids += intake.accept(client, tag, records)
    return ids


def delivered(bus: FaultBus, ids: list[str]) -> bool:
    client = bus.client()
    return all((journal.load(client, i) or {}).get("status") == journal.DELIVERED for i in ids)


def test_an_ordered_route_under_load_delivers_every_key_in_acceptance_order(ordered_bus):
    keys = [f"k{i}" for i in range(8)]
    for i, key in enumerate(keys):  # 1 to 4 ms: requests of one group take their turns unevenly
        ordered_bus.receiver.delays[f"/ord/{key}"] = 0.001 * (1 + i % 4)
    ids = accept_interleaved(ordered_bus, keys, 100, 1, lambda k, ns: (f"ord.{k}", [{"n": n} for n in ns]))
    wait_until(lambda: delivered(ordered_bus, ids), 60, interval=0.5, what="800 ordered events delivered")
    for key in keys:
        got = arrivals(ordered_bus, f"/ord/{key}")
        assert sorted(set(got)) == list(range(100)), f"every event of {key} arrives"
        assert overtaken(got) == 0, f"no event of {key} arrives after a later one"
    assert ordered_bus.client().hlen("bus:lanes:ord") == 0, "every lane is done once its events are"


def test_a_failing_first_event_holds_back_only_its_own_key(ordered_bus):
    path = "/ord/stuck"
    ordered_bus.receiver.script(path, 503, 503, 503)  # ~3 s of retries (1 s, 1 s, 1 s apart)
    stuck = intake.accept(ordered_bus.intake(), "ord.stuck", [{"n": n} for n in range(5)])
    flowing = accept_interleaved(ordered_bus, ["free1", "free2"], 20, 2,
                                 lambda k, ns: (f"ord.{k}", [{"n": n} for n in ns]))
    wait_until(lambda: delivered(ordered_bus, flowing), 20, interval=0.1, what="the other keys delivered")
    assert journal.load(ordered_bus.client(), stuck[0])["status"] == journal.RETRYING, \
        "the other keys went while the first event of 'stuck' still waits to be retried"
    assert set(arrivals(ordered_bus, path)) == {0}, "the later events of 'stuck' wait for its first"
    wait_until(lambda: delivered(ordered_bus, stuck), 30, interval=0.2, what="'stuck' delivered once it answers")
    assert arrivals(ordered_bus, path) == [0, 0, 0, 0, 1, 2, 3, 4]


def test_replayed_dead_events_go_out_in_acceptance_order(ordered_bus):
    path = "/dies/k"
    ordered_bus.receiver.script(path, 500, 500, 500)  # the first three die (max_attempts = 1); the lane moves on
    ids = intake.accept(ordered_bus.intake(), "dies.k", [{"n": n} for n in range(5)])
    wait_until(lambda: journal.load(ordered_bus.client(), ids[-1])["status"] == journal.DELIVERED, 20,
               what="the key's later events delivered after its first three died")
    assert [journal.load(ordered_bus.client(), i)["status"] for i in ids[:3]] == [journal.DEAD] * 3
    replay = subprocess.run([sys.executable, "-m", "bus", "replay", "--status", "dead", "--tag", "dies.k"],
                            env=ordered_bus.env, capture_output=True, text=True, timeout=30)
    assert replay.returncode == 0, replay.stderr
    wait_until(lambda: delivered(ordered_bus, ids), 20, interval=0.2, what="the replayed events delivered")
    assert arrivals(ordered_bus, path)[5:] == [0, 1, 2], "the replay sends them oldest first, one after another"
    shown = subprocess.run([sys.executable, "-m", "bus", "events", ids[1], "--json"], env=ordered_bus.env,
                           capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0, shown.stderr
    event = orjson.loads(shown.stdout)
    assert (event["lane"], event["seq"]) == (":dies.k", journal.load(ordered_bus.client(), ids[0])["seq"] + 1), \
        "bus events ID shows the event's lane and its place in acceptance order"


def test_an_event_without_its_order_key_field_is_refused_naming_the_field(ordered_bus):
    with pytest.raises(InvalidBody) as refused:
        intake.accept(ordered_bus.intake(), "acct.x", [{"account": "a"}, {"n": 1}])
    assert "item 1 has no field 'account'" in str(refused.value) and "ordered route acct" in str(refused.value)
    assert ordered_bus.client().zcard("bus:route:acct:queued") == 0, "nothing of the request was accepted"


def test_a_worker_killed_with_sigkill_mid_flow_keeps_the_order_and_loses_nothing(tmp_path):
    bus = make_fault_bus(tmp_path, {"acct": BY_FIELD}, VISIBILITY)
    try:
        bus.receiver.delays["/acct"] = 0.005
        worker = bus.worker()
        accounts = [f"a{i}" for i in range(6)]
        ids = accept_interleaved(bus, accounts, 60, 4, lambda k, ns: ("acct.web", [{"account": k, "n": n} for n in ns]))
        wait_until(lambda: len(bus.receiver.to("/acct")) >= 60, 30, what="deliveries under way")
        worker.signal(signal.SIGKILL)
        assert wait_group_gone(worker.proc.pid, 10), "the killed worker's processes are gone"
        bus.worker()
        wait_until(lambda: delivered(bus, ids), 45, interval=0.5, what="every event delivered after the kill")
        for account in accounts:
            got = arrivals(bus, "/acct", account)
            assert sorted(set(got)) == list(range(60)), f"nothing of {account} is lost"
            assert overtaken(got) == 0, f"no event of {account} arrives after a later one, repeats included"
    finally:
        bus.close()


def accept_before_the_worker(bus: FaultBus, counts: dict[str, int]) -> dict[str, list[str]]:
    """With no worker running: each key's events, keys in turn of `counts`. The first key's head makes the
    route's one message; the others' heads wait on the pending list, so the message the first task's start
    makes (refill) holds the heads of every other key: one group of several lanes' heads."""
    client = bus.intake()
    return {key: intake.accept(client, f"ord.{key}", [{"n": n} for n in range(count)]) for key, count in counts.items()}


def test_a_delivered_head_hands_the_task_its_lanes_next_record_and_a_stale_copy_takes_nothing(tmp_path):
    bus = make_fault_bus(tmp_path, {"ord": BY_TAG}, VISIBILITY)  # no worker: the test makes the moves itself
    try:
        client = bus.client()
        first, second = intake.accept(bus.intake(), "ord.k", [{"n": 0}, {"n": 1}])
        head = journal.load(client, first)
        lease = time.time() + 15
        answered = {"attempt": 1, "at": time.time(), "duration": 0.01, "status_code": 200}
        refused, taken = journal.record_attempt_taking(client, head, dict(answered), journal.DELIVERED,
                                                       lane_group=journal.lane_group("ord", 25), take=("task-x", lease))
        assert refused is None
        assert taken == journal.Event.from_record(journal.load(client, second)), \
            "the record comes back as the journal holds it, body and all"
        assert (taken.task, taken.status, taken.body) == ("task-x", journal.QUEUED, b'{"n":1}')
        assert client.zscore("bus:retry:ord", second) == pytest.approx(lease), "on its lease, should the task die"
        assert client.hget("bus:lanes:ord", ":ord.k") == second.encode()
        # Another copy of the head's message records it again: refused, and it takes nothing.
        refused, taken = journal.record_attempt_taking(client, head, dict(answered), journal.DELIVERED,
                                                       lane_group=journal.lane_group("ord", 25), take=("task-y", lease))
        assert (refused, taken) == (journal.DELIVERED, None)
        assert journal.load(client, second)["task"] == "task-x"
    finally:
        bus.close()


def test_a_task_following_one_lane_hands_its_groups_other_heads_to_the_other_pool_process(tmp_path):
    bus = make_fault_bus(tmp_path, {"ord": BY_TAG}, VISIBILITY)
    try:
        for key in ("long", "other"):
            bus.receiver.delays[f"/ord/{key}"] = 0.03
        # 'first' takes the first message and is done at once; the group [long, other] goes to the next task.
        ids = accept_before_the_worker(bus, {"first": 1, "long": 20, "other": 5})
        bus.worker()
        everything = [i for key in ids.values() for i in key]
        wait_until(lambda: delivered(bus, everything), 30, interval=0.2, what="every event delivered")
        long_times = [r.at for r in bus.receiver.requests if r.path == "/ord/long"]
        other_times = [r.at for r in bus.receiver.requests if r.path == "/ord/other"]
        # Held in the task following 'long', 'other' would go only after the 20 of 'long' (~0.6 s).
        assert other_times[0] < long_times[-1], "'other' went out while 'long' was still being followed"
        for key, count in {"first": 1, "long": 20, "other": 5}.items():
            assert arrivals(bus, f"/ord/{key}") == list(range(count)), f"{key} arrives once each, in order"
        log = "".join(p.read_text() for p in tmp_path.glob("worker-*.log"))
        assert "handing 1 events of other lanes, this task following one" in log
    finally:
        bus.close()


def test_sigkill_while_tasks_follow_lanes_after_handing_off_keeps_the_order_and_loses_nothing(tmp_path):
    bus = make_fault_bus(tmp_path, {"ord": BY_TAG}, VISIBILITY)
    try:
        counts = {"first": 1, **{f"k{i}": 80 for i in range(5)}}
        for key in counts:
            bus.receiver.delays[f"/ord/{key}"] = 0.005
        ids = accept_before_the_worker(bus, counts)
        worker = bus.worker()
        # Mid-flow: lanes' runs (longer than a group) under way, taken events on their leases.
        wait_until(lambda: len(bus.receiver.requests) >= 120, 30, interval=0.02, what="deliveries under way")
        worker.signal(signal.SIGKILL)
        assert wait_group_gone(worker.proc.pid, 10), "the killed worker's processes are gone"
        bus.worker()
        everything = [i for key in ids.values() for i in key]
        wait_until(lambda: delivered(bus, everything), 60, interval=0.5, what="every event delivered after the kill")
        for key, count in counts.items():
            got = arrivals(bus, f"/ord/{key}")
            assert sorted(set(got)) == list(range(count)), f"nothing of {key} is lost"
            assert overtaken(got) == 0, f"no event of {key} arrives after a later one, repeats included"
        assert bus.client().hlen("bus:lanes:ord") == 0, "every lane is done once its events are"
    finally:
        bus.close()
