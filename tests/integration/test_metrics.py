"""GET /metrics: counters move as events flow, whichever process moved them; gauges equal what Redis holds."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from bus import endpoints, journal
from conftest import free_port, start_ingress, wait_until
from metricskit import scrape, value


def settled(bus, ids: list[str]) -> bool:
    client = bus.redis.client()
    return all(journal.load(client, i)["status"] in (journal.DELIVERED, journal.DEAD) for i in ids)


def test_counters_and_latency_move_as_events_are_accepted_retried_delivered_and_dead(bus):
    name = f"m{uuid.uuid4().hex[:8]}"
    bus.receiver.script(f"/ops/ops.{name}.retry", 503)
    bus.receiver.script(f"/ops/ops.{name}.dead", (422, {}, b"no"))
    before = scrape(bus.url)
    ids = bus.post(f"ops.{name}.ok", json.dumps([{"n": 1}, {"n": 2}])).json()["ids"]
    ids += bus.post(f"ops.{name}.retry", "{}").json()["ids"] + bus.post(f"ops.{name}.dead", "{}").json()["ids"]
    assert bus.post("nomatch.x", "{}").status_code == 404
    assert bus.post(f"ops.{name}.ok", "{broken").status_code == 400
    assert bus.post("bad..tag", "{}").status_code == 400
    wait_until(lambda: settled(bus, ids), 20, what="every event delivered or dead")
    after = scrape(bus.url)

    def moved(name_: str, **labels: str) -> float:
        return value(after, name_, **labels) - value(before, name_, **labels)

    assert moved("bus_events_accepted_total", route="ops") == 4
    assert moved("bus_events_delivered_total", route="ops") == 3
    assert moved("bus_events_retried_total", route="ops", status_class="5xx") == 1
    assert moved("bus_events_dead_total", route="ops", status_class="4xx") == 1
    assert moved("bus_requests_refused_total", route="", reason="no_route") == 1
    assert moved("bus_requests_refused_total", route="ops", reason="invalid_body") == 1
    assert moved("bus_requests_refused_total", route="", reason="invalid_tag") == 1
    assert moved("bus_delivery_latency_seconds_count", route="ops") == 3
    assert moved("bus_delivery_latency_seconds_bucket", route="ops", le="+Inf") == 3
    # The retried one waited at least its first backoff (0.5-1 s): the sum says so, the fast bucket does not hold it.
    assert moved("bus_delivery_latency_seconds_sum", route="ops") >= 0.5
    assert moved("bus_delivery_latency_seconds_bucket", route="ops", le="0.25") <= 2
    assert value(after, "bus_redis_up") == 1


def test_backlog_retrying_oldest_and_breaker_gauges_equal_what_redis_holds(bus):
    """`parked` has no worker: what is posted stays, so the gauges can be checked against Redis exactly."""
    client = bus.redis.client()
    key = endpoints.key_for("parked", f"{bus.receiver.url}/parked/gauge")
    forget_breakers(client)
    ids = bus.post("parked.gauge", json.dumps([{"n": i} for i in range(3)])).json()["ids"]
    journal.park(client, journal.load(client, ids[0]), time.time() + 3600)
    samples = scrape(bus.url)
    assert value(samples, "bus_backlog_events", route="parked") == journal.backlog(client, "parked")
    assert value(samples, "bus_retrying_events", route="parked") == client.zcard("bus:route:parked:retrying") >= 1
    assert value(samples, "bus_queued_events", route="parked") == client.zcard("bus:route:parked:queued") >= 2
    assert value(samples, "bus_queue_messages", route="parked") == client.llen("bus.parked")
    assert value(samples, "bus_pending_events", route="parked") == client.llen("bus:pending:parked")
    oldest = min(s for _, s in client.zrange("bus:route:parked:queued", 0, 0, withscores=True)
                 + client.zrange("bus:route:parked:retrying", 0, 0, withscores=True))
    assert value(samples, "bus_oldest_waiting_seconds", route="parked") == pytest.approx(time.time() - oldest, abs=2)
    assert value(samples, "bus_endpoints_failing", route="parked") == 0
    assert value(samples, "bus_breakers_open", route="parked") == 0
    assert not [name for name, labels in samples if dict(labels).get("route") == "parked" and "endpoint" in dict(labels)]

    more = scrape(bus.url)
    bus.post("parked.gauge", json.dumps([{"n": i} for i in range(2)]))
    for _ in range(5):
        journal.breakers.failed(client, key, time.time(), 5, 5.0, 0.0)
    journal.breakers.hold_back(client, journal.load(client, ids[1]), key, time.time())
    after = scrape(bus.url)
    assert value(after, "bus_backlog_events", route="parked") == value(more, "bus_backlog_events", route="parked") + 2
    assert value(after, "bus_endpoints_failing", route="parked") == 1
    assert value(after, "bus_breakers_open", route="parked") == 1
    labels = {"route": "parked", "endpoint": key.endpoint}
    assert value(after, "bus_breaker_open", **labels) == 1
    assert value(after, "bus_endpoint_failing", **labels) == 1
    assert value(after, "bus_endpoint_consecutive_failures", **labels) == 5
    assert value(after, "bus_endpoint_held_events", **labels) == 1
    since = value(after, "bus_endpoint_failing_since_timestamp_seconds", **labels)
    assert since == pytest.approx(time.time(), abs=5)
    forget_breakers(client)


def forget_breakers(client) -> None:
    """The `parked` route's breakers and what they hold, so the next reading starts from none."""
    leftovers = [*client.scan_iter(match="bus:breaker:parked:*"), *client.scan_iter(match="bus:parked:parked:*")]
    client.delete("bus:breakers:parked", "bus:failing:parked", *leftovers)


def test_metrics_answer_with_redis_up_0_when_redis_is_down_and_the_ingress_logs_json(bus):
    """One extra ingress for two checks: a scrape without Redis, and BUS_LOG_FORMAT=json on the ingress side."""
    env = {**bus.env, "BUS_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "BUS_REDIS_TIMEOUT": "1",
           "BUS_LOG_FORMAT": "json"}
    log = bus.tmp / f"ingress-noredis-{uuid.uuid4().hex[:6]}.log"
    ingress, url = start_ingress(env, log)
    try:
        started = time.monotonic()
        samples = scrape(url)
        assert time.monotonic() - started < 5
        assert value(samples, "bus_redis_up") == 0
        assert not any(name.startswith("bus_events_") for name, _ in samples)
    finally:
        ingress.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"uvicorn.error"} <= {line["logger"] for line in lines}
    assert any(line["message"].startswith("Uvicorn running on ") for line in lines)
