"""A fan-out route with one destination down, as an operator sees it: its backlog, `bus stats` line and /metrics
are that destination's own while the other's show all fine, and the route's backlog_limit refuses once the
destination furthest behind reaches it (naming that destination), then admits again once it drains. Real Redis,
ingress, worker and receivers; the down destination's port has nothing listening until it comes back."""
from __future__ import annotations

import json

import requests

from bus import journal
from conftest import Receiver, bus_env, run_bus, start_ingress, start_worker, wait_until
from metricskit import scrape, value

LIMIT = 4
ROUTE = """
match = "shop.*"
backlog_limit = {limit}
retry_max_interval = 1

[[destinations]]
name = "up"
endpoint = "{up}/up"

[[destinations]]
name = "down"
endpoint = "{down}/down"
"""


def test_one_destination_down_its_backlog_stats_and_metrics_are_its_own_and_backlog_limit_follows_it(
        own_redis, tmp_path):
    up, down = Receiver(), Receiver()
    up.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "shop.toml").write_text(ROUTE.format(limit=LIMIT, up=up.url, down=down.url))
    env = bus_env(own_redis.url, routes)
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    client = own_redis.client()
    try:
        ids = [requests.post(f"{url}/shop.paid", json={"n": n}, timeout=10).json()["ids"][0] for n in range(LIMIT)]
        wait_until(lambda: sorted(up.ids("/up")) == sorted(ids), 15, what="the destination that is up to get all")
        wait_until(lambda: any(journal.load(client, f"{i}.down")["attempts"] for i in ids), 15,
                   what="the destination that is down to be tried")
        assert journal.backlog(client, "shop.up") == 0 and journal.backlog(client, "shop.down") == LIMIT

        refused = requests.post(f"{url}/shop.paid", json={"n": "over"}, timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"].isdigit()
        assert refused.json()["error"].startswith(f"route shop's destination down has {LIMIT} events waiting, "
                                                  f"its backlog_limit is {LIMIT}: nothing was accepted")
        assert journal.backlog(client, "shop.up") == 0, "a refused event reaches no destination"

        stats = run_bus(None, "stats", "--json", env=env)
        assert stats.returncode == 0, stats.stderr
        rows = {r["route"]: r for r in json.loads(stats.stdout)["routes"]}
        assert set(rows) == {"shop.up", "shop.down"}
        assert (rows["shop.up"]["backlog"], rows["shop.up"]["delivered_total"], rows["shop.up"]["endpoint"]) == (
            0, LIMIT, "ok")
        assert rows["shop.up"]["endpoints"] == [] and rows["shop.up"]["oldest_waiting_seconds"] is None
        assert (rows["shop.down"]["backlog"], rows["shop.down"]["delivered_total"], rows["shop.down"]["endpoint"]) == (
            LIMIT, 0, "failing")
        # The down destination's host refuses connections: its origin's breaker, not the path's, is the one failing.
        assert [(e["endpoint"], e["scope"]) for e in rows["shop.down"]["endpoints"]] == [(down.url, "origin")]
        table = run_bus(None, "stats", env=env).stdout.splitlines()
        line = {}  # each route's line in the first table (the endpoints' table below starts with the route too)
        for row in table:
            if row.startswith("shop."):
                line.setdefault(row.split()[0], row)
        assert line["shop.up"].split()[1:4] == ["0", "0", "0"] and line["shop.up"].split()[-1] == "ok"
        assert line["shop.down"].split()[1] == str(LIMIT) and "1 endpoint failing" in line["shop.down"]
        assert any(row.split()[:2] == ["shop.down", down.url] for row in table), table

        samples = scrape(url)
        assert value(samples, "bus_backlog_events", route="shop.down") == LIMIT
        assert value(samples, "bus_backlog_events", route="shop.up") == 0
        assert value(samples, "bus_events_accepted_total", route="shop.up") == LIMIT
        assert value(samples, "bus_events_accepted_total", route="shop.down") == LIMIT
        assert value(samples, "bus_events_delivered_total", route="shop.up") == LIMIT
        assert value(samples, "bus_events_delivered_total", route="shop.down") == 0
        assert value(samples, "bus_endpoints_failing", route="shop.down") == 1
        assert value(samples, "bus_endpoints_failing", route="shop.up") == 0
        assert value(samples, "bus_endpoint_failing", route="shop.down", endpoint=down.url) == 1
        assert not [k for k in samples if k[0] == "bus_endpoint_failing" and ("route", "shop.up") in k[1]]
        assert value(samples, "bus_oldest_waiting_seconds", route="shop.down") > 0
        assert value(samples, "bus_oldest_waiting_seconds", route="shop.up") == 0

        down.start()
        wait_until(lambda: sorted(set(down.ids("/down"))) == sorted(ids), 30, what="the destination back to get all")
        wait_until(lambda: journal.backlog(client, "shop.down") == 0, 10, what="its backlog to drain")
        admitted = requests.post(f"{url}/shop.paid", json={"n": "after"}, timeout=10)
        assert admitted.status_code == 202, admitted.text
        (late,) = admitted.json()["ids"]
        wait_until(lambda: late in up.ids("/up") and late in down.ids("/down"), 15, what="both to get the next one")
        after = scrape(url)
        assert value(after, "bus_events_delivered_total", route="shop.down") == LIMIT + 1
        assert value(after, "bus_endpoints_failing", route="shop.down") == 0
        assert len(up.ids("/up")) == LIMIT + 1, "the destination that was up got nothing twice"
    finally:
        ingress.stop()
        worker.stop()
        up.stop()
        down.stop()
