"""A fan-out route's events in the journal by the route's own name (SPEC.md, "Fan-out and order"): `bus events
--route api` lists each event once with its destinations' statuses, page by page; `bus replay --route api` sends
again each destination's copy in the status asked (`--destination` narrows it), and so does a replay by the
event's own id (the console's). Real Redis, ingress, worker and receiver."""
from __future__ import annotations

import json

import requests

from bus import journal
from conftest import FANOUT_ROUTE, Receiver, bus_env, run_bus, start_ingress, start_worker, wait_until

EVENTS = 5


def test_a_fan_out_route_is_listed_and_replayed_by_its_own_name(own_redis, tmp_path):
    receiver = Receiver()
    receiver.script("/b", *[(422, {}, b'{"error": "unknown"}')] * EVENTS)  # b gives up on every event at once
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(FANOUT_ROUTE.format(url=receiver.url))
    (routes / "other.toml").write_text(f'match = "other.*"\nendpoint = "{receiver.url}/other"\n')
    env = bus_env(own_redis.url, routes)

    def bus(*args: str):
        return run_bus(None, *args, env=env)

    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        ids = [requests.post(f"{url}/api.x", json={"n": n}, timeout=10).json()["ids"][0] for n in range(EVENTS)]
        requests.post(f"{url}/other.x", json={}, timeout=10).raise_for_status()
        client = own_redis.client()
        wait_until(lambda: all(journal.load(client, f"{i}.b")["status"] == journal.DEAD for i in ids)
                   and all(journal.load(client, f"{i}.a")["status"] == journal.DELIVERED for i in ids), 20,
                   what="a to deliver every event and b to give up on each")

        listed = json.loads(bus("events", "--route", "api", "--json").stdout)
        assert [e["id"] for e in listed["events"]] == ids[::-1], "each event once, newest first, by its own id"
        assert listed["cursor"] is None
        first = listed["events"][0]
        assert first["route"] == "api" and first["status"] == journal.DEAD and first["attempts"] == 2
        assert [(d["name"], d["status"], d["attempts"]) for d in first["destinations"]] == [
            ("a", "delivered", 1), ("b", "dead", 1)]
        table = bus("events", "--route", "api")
        assert table.returncode == 0, table.stderr
        assert "DESTINATIONS" in table.stdout and f"{ids[0]}  api.x  api    dead" in table.stdout
        assert "a=delivered b=dead" in table.stdout
        # An event is listed when a copy of it is in the status asked: dead ones are what replay sends again.
        for status in ("dead", "delivered"):
            chosen = json.loads(bus("events", "--route", "api", "--status", status, "--json").stdout)["events"]
            assert [e["id"] for e in chosen] == ids[::-1] and all(len(e["destinations"]) == 2 for e in chosen)
        assert json.loads(bus("events", "--route", "api", "--status", "queued", "--json").stdout)["events"] == []

        # Page by page: every event exactly once, however the pages cut between an event's copies.
        for size, status in ((1, []), (3, []), (2, ["--status", "dead"])):
            seen, cursor = [], None
            for _ in range(EVENTS + 2):
                page = json.loads(bus("events", "--route", "api", "--limit", str(size), "--json", *status,
                                      *(["--cursor", cursor] if cursor else [])).stdout)
                seen += [e["id"] for e in page["events"]]
                cursor = page["cursor"]
                if cursor is None:
                    break
            assert seen == ids[::-1], f"pages of {size} {status}"
        # One destination's copies page too (a cursor at a copy's id is taken back).
        page = json.loads(bus("events", "--route", "api.b", "--limit", "2", "--json").stdout)
        rest = bus("events", "--route", "api.b", "--limit", "10", "--json", "--cursor", page["cursor"])
        assert rest.returncode == 0, rest.stderr
        assert [e["id"] for e in page["events"] + json.loads(rest.stdout)["events"]] == [f"{i}.b" for i in ids[::-1]]

        api = requests.get(f"{url}/events", params={"route": "api", "status": "dead"}, timeout=10).json()
        assert [e["id"] for e in api["events"]] == ids[::-1] and api["events"][0]["destinations"][1]["status"] == "dead"
        narrowed = requests.get(f"{url}/events", params={"route": "api", "destination": "b"}, timeout=10).json()
        assert [e["id"] for e in narrowed["events"]] == [f"{i}.b" for i in ids[::-1]]

        dry = bus("replay", "--route", "api", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert f"dry run: {EVENTS} events would be sent" in dry.stdout and f"would send {ids[0]}.b" in dry.stdout
        assert ".a " not in dry.stdout, "the delivered copies are not dead: not replayed"
        both = bus("replay", "--route", "api", "--status", "dead", "--status", "delivered", "--dry-run", "--limit", "7")
        assert "dry run: 7 events would be sent" in both.stdout, "--limit counts across the statuses asked"
        only_a = bus("replay", "--route", "api", "--destination", "a", "--status", "dead", "--dry-run")
        assert "nothing to replay" in only_a.stdout

        # The console's replay: the event's own id, status dead: its dead copy (b's) goes again, a's stays.
        sent = requests.post(f"{url}/events/replay", json={"ids": [ids[0]], "status": "dead"}, timeout=10).json()
        assert sent["replayed"] == 1 and sent["ids"] == [f"{ids[0]}.b"]
        wait_until(lambda: journal.load(client, f"{ids[0]}.b")["status"] == journal.DELIVERED, 15,
                   what="the replayed copy to be delivered")
        replayed = bus("replay", "--route", "api")
        assert replayed.returncode == 0 and f"replayed {EVENTS - 1} events" in replayed.stdout, replayed.stdout
        wait_until(lambda: all(journal.load(client, f"{i}.b")["status"] == journal.DELIVERED for i in ids), 15,
                   what="every replayed copy to be delivered")
        assert sorted(receiver.ids("/a")) == sorted(ids), "a was sent nothing again"
        whole = json.loads(bus("events", "--route", "api", "--json").stdout)["events"]
        assert {e["status"] for e in whole} == {journal.DELIVERED}
        assert bus("events", "--route", "other", "--json").stdout.count('"route":"other"') == 1, \
            "a route with one endpoint lists as before"
    finally:
        ingress.stop()
        worker.stop()
        receiver.stop()
