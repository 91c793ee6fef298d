"""Fan-out (SPEC.md, "Fan-out and order"): a Fluentd `@type copy` of two http stores, imported, delivers every
event to both; a destination that is down holds back none of the other's, and gets them all once it is back,
each (event, destination) with its own attempts in the journal."""
from __future__ import annotations

import json
import textwrap
import time

import requests

from bus import Producer, journal, settings
from conftest import Receiver, bus_env, run_bus, start_ingress, start_worker, wait_until

EVENTS = 12
COPY = """
<match shop.*>
  @type copy
  <store>
    @id orders
    @type http
    endpoint {orders}/orders/${{tag[1]}}
    <buffer>
      retry_max_interval 1s
    </buffer>
  </store>
  <store>
    @id audit
    @type http
    endpoint {audit}/audit
    <buffer>
      retry_max_interval 1s
    </buffer>
  </store>
</match>
"""


class Cli:
    def __init__(self, env):
        self.env = env

    def __call__(self, *args: str):
        return run_bus(None, *args, env=self.env)


def test_an_imported_copy_delivers_to_both_stores_and_one_down_holds_back_none_of_the_other(own_redis, tmp_path):
    orders, audit = Receiver(), Receiver()  # audit is down (nothing listens on its port) until it starts
    orders.start()
    config = tmp_path / "fluentd.conf"
    config.write_text(textwrap.dedent(COPY.format(orders=orders.url, audit=audit.url)))
    routes = tmp_path / "routes"
    env = bus_env(own_redis.url, routes)
    bus = Cli(env)
    imported = bus("routes", "import", str(config), "--out", str(routes))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "converted to destinations orders, audit" in imported.stdout
    shown = bus("routes", "shop.paid")
    assert shown.returncode == 0, shown.stderr
    assert f"POST {orders.url}/orders/paid" in shown.stdout and f"POST {audit.url}/audit" in shown.stdout
    assert "destination audit, queue bus.01-shop.audit" in shown.stdout

    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        ids = [requests.post(f"{url}/shop.paid", json={"n": n}, timeout=10).json()["ids"][0] for n in range(EVENTS)]
        wait_until(lambda: len(orders.to("/orders/")) >= EVENTS, 15, what="orders to get every event")
        assert sorted(orders.ids("/orders/")) == sorted(ids), "the event's own id, the same the producer got"
        client = own_redis.client()
        waiting = [journal.load(client, f"{i}.audit") for i in ids]
        # Tried and failed, or held back by audit's open breaker: waiting either way, none lost.
        assert all(e["status"] in ("queued", "retrying") for e in waiting), [e["status"] for e in waiting]
        assert sum(e["attempts"] for e in waiting) >= 1
        assert all(journal.load(client, f"{i}.orders")["attempts"] == 1 for i in ids)

        shown = json.loads(bus("events", ids[0], "--json").stdout)
        assert shown["status"] == "retrying" and shown["route"] == "01-shop"
        assert {d["name"]: d["status"] for d in shown["destinations"]} == {"orders": "delivered", "audit": "retrying"}

        audit.start()
        wait_until(lambda: len(set(audit.ids("/audit"))) >= EVENTS, 20, what="audit to get every event once back")
        assert sorted(set(audit.ids("/audit"))) == sorted(ids)
        wait_until(lambda: all(journal.load(client, f"{i}.audit")["status"] == "delivered" for i in ids), 10,
                   what="the audit copies to be journaled as delivered")
        assert len(orders.to("/orders/")) == EVENTS, "orders was not sent anything again"
        audit_attempts = [journal.load(client, f"{i}.audit")["attempts"] for i in ids]
        assert max(audit_attempts) >= 2 and all(journal.load(client, f"{i}.orders")["attempts"] == 1 for i in ids)
        page = requests.get(f"{url}/events/{ids[0]}", timeout=10).json()
        assert page["status"] == "delivered" and len(page["destinations"]) == 2

        replayed = bus("replay", "--status", "delivered", "--route", "01-shop", "--destination", "audit",
                       "--id", f"{ids[0]}.audit")
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        wait_until(lambda: audit.ids("/audit").count(ids[0]) >= 2, 10, what="the replayed copy to reach audit")
        time.sleep(0.5)
        assert len(orders.to("/orders/")) == EVENTS, "a replay to one destination sends nothing to the other"
        wrong = bus("replay", "--route", "01-shop", "--destination", "nope")
        assert wrong.returncode != 0 and "no destination 'nope' in route '01-shop'" in wrong.stderr
        refused = requests.post(f"{url}/events/replay", json={"route": "01-shop", "destination": "nope"}, timeout=10)
        assert refused.status_code == 400 and "no destination 'nope' in route '01-shop'" in refused.json()["error"]

        keyed = [requests.post(f"{url}/shop.paid", json={"keyed": 1}, headers={"Idempotency-Key": "k-1"},
                               timeout=10).json()["ids"] for _ in range(2)]
        assert keyed[0] == keyed[1], "a repeated Idempotency-Key gets the first request's ids"
        wait_until(lambda: keyed[0][0] in orders.ids("/orders/") and keyed[0][0] in audit.ids("/audit"), 10,
                   what="both destinations to get the keyed event")

        producer = Producer(tmp_path / "spool", config=settings.load(env))
        try:  # a producer's spool sends each destination its copy too
            spooled = [producer.emit("shop.paid", {"spooled": 1}), *producer.emit_many("shop.paid", [{"spooled": 2}])]
            wait_until(lambda: all(i in orders.ids("/orders/") and i in audit.ids("/audit") for i in spooled), 10,
                       what="both destinations to get the spooled events")
        finally:
            producer.close(5)
        time.sleep(0.3)
        assert orders.ids("/orders/").count(keyed[0][0]) == 1 and audit.ids("/audit").count(keyed[0][0]) == 1
    finally:
        ingress.stop()
        worker.stop()
        orders.stop()
        audit.stop()
