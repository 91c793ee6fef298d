"""The journal: every event with its attempts, listed by filter, shown by id, replayed, purged, expired."""
from __future__ import annotations

import json
import time
import uuid

import pytest
import requests

from bus import journal
from bus.filters import EventFilter
from conftest import parked_tag, run_bus, wait_until


def status_of(bus, event_id: str) -> str:
    return journal.load(bus.redis.client(), event_id)["status"]


def dead_events(bus, name: str, n: int) -> list[str]:
    """n events on api.<name> that the receiver refuses with 422 (dead at once)."""
    bus.receiver.script(f"/api/{name}/", *[(422, {}, b"no thanks")] * n)
    ids = [bus.post(f"api.{name}", json.dumps({"n": i})).json()["ids"][0] for i in range(n)]
    wait_until(lambda: all(status_of(bus, i) == journal.DEAD for i in ids), 20, what="dead letters")
    return ids


def test_bus_events_lists_by_status_and_tag_pattern_newest_first_in_pages(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    ids = dead_events(bus, name, 3)
    first = run_bus(bus, "events", "--status", "dead", "--tag", f"api.{name}", "--since", "1h", "--limit", "2", "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [e["id"] for e in page["events"]] == ids[::-1][:2], "newest first"
    assert page["events"][0] | {"received": 0} == {"id": ids[2], "tag": f"api.{name}", "route": "api", "status": "dead",
                                                   "attempts": 1, "last": "422", "received": 0, "tier": "redis"}
    second = json.loads(run_bus(bus, "events", "--status", "dead", "--tag", f"api.{name}", "--limit", "2",
                                "--cursor", page["cursor"], "--json").stdout)
    assert [e["id"] for e in second["events"]] == [ids[0]]
    table = run_bus(bus, "events", "--status", "dead", "--tag", "api.**", "--since", "1h")
    assert ids[0] in table.stdout and "STATUS" in table.stdout.splitlines()[0]
    assert run_bus(bus, "events", "--status", "delivered", "--tag", f"api.{name}", "--json").stdout.count(ids[0]) == 0


def test_bus_events_id_shows_body_headers_and_every_attempt(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    bus.receiver.script(f"/api/{name}/", (503, {}, b"busy, try later"))
    resp = requests.post(f"{bus.url}/api.{name}", data='{"order": 7}',
                         headers={"Content-Type": "application/json", "Authorization": "Bearer s3cret", "X-Trace": "abc"})
    (event_id,) = resp.json()["ids"]
    wait_until(lambda: status_of(bus, event_id) == journal.DELIVERED, 20, what="delivery after one retry")
    shown = json.loads(run_bus(bus, "events", event_id, "--json").stdout)
    assert shown["body"] == {"order": 7}
    assert shown["headers"]["X-Trace"] == "abc"
    assert "Authorization" not in shown["headers"], "producer credentials are never journaled"
    first, second = shown["attempt_log"]
    assert (first["status_code"], first["response"]) == (503, "busy, try later")
    assert second["status_code"] == 200 and second["duration"] >= 0 and second["at"] > first["at"]
    human = run_bus(bus, "events", event_id)
    assert "busy, try later" in human.stdout and '"order": 7' in human.stdout
    missing = run_bus(bus, "events", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no event" in missing.stderr


def test_replay_dead_resends_to_the_route_with_the_same_request_id(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    ids = dead_events(bus, name, 2)
    done = run_bus(bus, "replay", "--status", "dead", "--tag", f"api.{name}")
    assert done.returncode == 0 and "replayed 2 events to their routes" in done.stdout
    wait_until(lambda: all(status_of(bus, i) == journal.DELIVERED for i in ids), 20, what="replayed events delivered")
    got = bus.receiver.to(f"/api/{name}/")
    assert sorted(r.headers["X-Request-Id"] for r in got) == sorted(ids * 2)
    assert {r.headers["X-Bus-Attempt"] for r in got[2:]} == {"2"}


def test_replay_to_another_url_sends_copies_and_leaves_the_events_alone(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    (event_id,) = bus.post(f"api.{name}", '{"real": true}').json()["ids"]
    wait_until(lambda: status_of(bus, event_id) == journal.DELIVERED, 15, what="delivery")
    before = journal.load(bus.redis.client(), event_id)
    staging = f"{bus.receiver.url}/staging/{name}/"
    done = run_bus(bus, "replay", "--status", "delivered", "--tag", f"api.{name}", "--since", "2h", "--to", staging)
    assert done.returncode == 0, done.stderr
    (copy,) = wait_until(lambda: bus.receiver.to(f"/staging/{name}/"), 15, what="the staging copy")
    assert copy.headers["X-Request-Id"] == event_id and copy.headers["X-Bus-Replay"] == "copy"
    assert json.loads(copy.body) == {"real": True}
    wait_until(lambda: json.loads(run_bus(bus, "events", event_id, "--json").stdout)["copies"], 10, what="copy journaled")
    after = journal.load(bus.redis.client(), event_id)
    assert (after["status"], after["attempts"]) == (before["status"], before["attempts"])
    assert len(bus.receiver.to(f"/api/{name}/")) == 1, "the original endpoint got nothing more"


def test_replay_dry_run_says_how_many_and_sends_nothing(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    ids = dead_events(bus, name, 2)
    done = run_bus(bus, "replay", "--tag", f"api.{name}", "--dry-run")
    assert done.returncode == 0
    assert "dry run: 2 events would be sent to their routes" in done.stdout
    assert all(i in done.stdout for i in ids)
    time.sleep(1)
    assert all(status_of(bus, i) == journal.DEAD for i in ids)
    assert len(bus.receiver.to(f"/api/{name}/")) == 2


def test_replay_of_nothing_says_so_and_exits_0(bus):
    done = run_bus(bus, "replay", "--tag", "nothing.matches.this")
    assert done.returncode == 0 and "no matching events" in done.stdout


@pytest.mark.parametrize("args, says", [
    (["--since", "yesterday-ish"], "is not a time"),
    (["--tag", "api.{x"], "unclosed"),
    (["--since", "1h", "--until", "2h"], "--since is after --until"),
])
def test_bad_filters_are_refused_with_a_clear_message(bus, args, says):
    for command in ("events", "replay", "purge"):
        done = run_bus(bus, command, *args)
        assert done.returncode == 1 and says in done.stderr, (command, done.stderr)
    unknown = run_bus(bus, "events", "--status", "lost")
    assert unknown.returncode == 2 and "invalid choice: 'lost'" in unknown.stderr
    assert requests.get(f"{bus.url}/events", params={"status": "lost"}, timeout=10).json() == {
        "error": "unknown status 'lost'; use one of queued, retrying, delivered, dead"}


def test_http_journal_api_lists_shows_and_replays(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    ids = dead_events(bus, name, 2)
    listed = requests.get(f"{bus.url}/events", params={"status": "dead", "tag": f"api.{name}", "since": "1h", "limit": 1},
                          timeout=10).json()
    assert [e["id"] for e in listed["events"]] == [ids[1]] and listed["cursor"]
    rest = requests.get(f"{bus.url}/events", params={"status": "dead", "tag": f"api.{name}", "cursor": listed["cursor"]},
                        timeout=10).json()
    assert [e["id"] for e in rest["events"]] == [ids[0]] and rest["cursor"] is None
    shown = requests.get(f"{bus.url}/events/{ids[0]}", timeout=10).json()
    assert shown["body"] == {"n": 0} and shown["attempt_log"][0]["status_code"] == 422
    assert requests.get(f"{bus.url}/events/{uuid.uuid4()}", timeout=10).status_code == 404
    dry = requests.post(f"{bus.url}/events/replay", json={"tag": f"api.{name}", "dry_run": True}, timeout=10).json()
    assert (dry["matched"], dry["replayed"]) == (2, 0)
    real = requests.post(f"{bus.url}/events/replay", json={"status": "dead", "tag": f"api.{name}"}, timeout=10).json()
    assert real["replayed"] == 2
    wait_until(lambda: all(status_of(bus, i) == journal.DELIVERED for i in ids), 20, what="replayed over HTTP")
    bad = requests.post(f"{bus.url}/events/replay", json={"to": "ftp://x"}, timeout=10)
    assert bad.status_code == 400 and "not an http" in bad.json()["error"]


def test_purge_counts_without_yes_and_deletes_with_it(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    ids = dead_events(bus, name, 2)
    dry = run_bus(bus, "purge", "--tag", f"api.{name}")
    assert "2 events match; nothing deleted" in dry.stdout
    assert all(journal.load(bus.redis.client(), i) for i in ids)
    done = run_bus(bus, "purge", "--tag", f"api.{name}", "--yes")
    assert "purged 2 events" in done.stdout
    assert not any(journal.load(bus.redis.client(), i) for i in ids)
    assert json.loads(run_bus(bus, "events", "--tag", f"api.{name}", "--json").stdout)["events"] == []


def test_delivered_events_expire_and_leave_the_listings(bus):
    """Retention: the record expires with Redis TTL and reading the index sweeps its id out."""
    client = bus.redis.client()
    name = f"j{uuid.uuid4().hex[:8]}"
    (event_id,) = bus.post(f"parked.{name}", "{}").json()["ids"]
    event = journal.load(client, event_id)
    journal.record_attempt(client, event, {"attempt": 1, "at": time.time(), "status_code": 200, "duration": 0.01},
                           journal.DELIVERED, retention=1)
    f = EventFilter(tag=f"parked.{name}")
    assert [e["id"] for e in journal.find(client, f, retention=3600).events] == [event_id]
    wait_until(lambda: journal.load(client, event_id) is None, 5, what="the record to expire")
    time.sleep(1.1)
    assert journal.find(client, f, retention=1).events == []
    assert client.zscore("bus:status:delivered", event_id) is None
    assert client.zscore("bus:route:parked:delivered", event_id) is None


def test_dead_events_do_not_expire(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    (event_id,) = dead_events(bus, name, 1)
    client = bus.redis.client()
    assert client.ttl(f"bus:event:{event_id}") == -1
    assert journal.find(client, EventFilter(status="dead", tag=f"api.{name}"), retention=1).events[0]["id"] == event_id


def test_replay_by_id_resends_only_those_events(bus):
    name = f"j{uuid.uuid4().hex[:8]}"
    ids = dead_events(bus, name, 3)
    done = run_bus(bus, "replay", "--id", ids[0], "--id", ids[2])
    assert done.returncode == 0 and "replayed 2 events to their routes" in done.stdout, done.stderr
    wait_until(lambda: status_of(bus, ids[0]) == status_of(bus, ids[2]) == journal.DELIVERED, 20, what="the two")
    assert status_of(bus, ids[1]) == journal.DEAD
    bad = run_bus(bus, "replay", "--id", "nope")
    assert bad.returncode == 1 and "not an event id" in bad.stderr


def test_the_record_names_the_task_message_that_sends_the_event_next(bus):
    """Every path that queues a message for an event names it in the event's record in the same step;
    an attempt or a park leaves no message named. A message that finds another name (or none) is
    superseded: Redis restored it after its work was done, or another message took the event over."""
    from bus.broker.messages import Outgoing, event_ids_of, outgoing

    client = bus.redis.client()
    (event_id,) = bus.post(parked_tag(), "{}").json()["ids"]
    for _ in range(100):  # earlier tests' events may wait before it on the route's pending list
        carrying = [m for m in journal.task_messages(client) if event_id in event_ids_of(m)]
        if carrying:
            break
        client.delete(journal.filling_key("parked"))
        journal.refill_if_idle(client, "parked")
    (group,) = carrying

    def owner() -> str | None:
        return journal.load(client, event_id).get("task")

    def message(task_id: str, redelivered: bool = False, ids: tuple[str, ...] = ()) -> Outgoing:
        ids = ids or (event_id,)
        return outgoing([(i, "parked.x") for i in ids], "bus.parked", task_id, redelivered=redelivered)

    def check(task_id: str) -> str:
        return journal.recheck(client, [journal.load(client, event_id)], task_id)[0]

    assert owner() == group["headers"]["id"] == event_ids_of(group)[0], "a group's task id is its first event's"
    assert (check(owner()), check("another-task")) == ("ok", "superseded")
    loaded = journal.load(client, event_id)
    stale = {**loaded, "attempts": 99, "status": journal.DEAD}
    ((refused, fresh),) = journal.recheck_events(client, [stale], owner())
    assert refused is None and (fresh.attempts, fresh.status) == (loaded["attempts"], loaded["status"])
    assert (stale["attempts"], stale["status"]) == (99, journal.DEAD), "the caller's copy is left as it is"

    journal.record_attempt(client, journal.load(client, event_id),
                           {"attempt": 1, "at": time.time(), "duration": 0.0, "status_code": 503},
                           journal.RETRYING, retry_at=time.time() - 1)
    assert owner() == "" and check(group["headers"]["id"]) == "superseded", "the attempt was made: its message is done"
    assert journal.release(client, "parked", [message("from-the-schedule")]) == 1
    assert owner() == "from-the-schedule"

    journal.park(client, journal.load(client, event_id), time.time() + 3600)
    assert owner() == "" and check("from-the-schedule") == "superseded", "a park hands it to the schedule"

    journal.hand_off(client, "parked", message("handed-off"))
    assert owner() == "handed-off"
    journal.requeue(client, [journal.load(client, event_id)], [(message("replayed"), "parked")])
    assert owner() == "replayed"
    assert journal.requeue_lost(client, event_id, "parked", message("recovered", redelivered=True))
    assert owner() == "recovered" and check("replayed") == "superseded"

    client.hdel(journal.event_key(event_id), "task")  # a record from before messages were named
    assert check("any-task") == "ok"
    journal.hand_off(client, "parked", message("handed-off", ids=("no-such-event",)))
    assert not client.exists(journal.event_key("no-such-event")), "naming a message never makes a record"
    assert journal.recheck(client, [{"id": "no-such-event"}], "any-task") == ["gone"]
