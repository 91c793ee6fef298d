"""A Sentinel failover to a replica that lacks the task message templates (journal/templates.py).

Every script that queues a message reads its template from `bus:template:<digest>`, stored once per
process. A replica can be promoted without those keys: promoted before a template's SET reached it, or
detached and then promoted, or holding a key whose TTL ran out. Here the replica's template keys are
deleted just before SENTINEL FAILOVER (the replica made writable for that one DEL): the new primary then
holds every event written before, and no template, which is each of those cases at once, and the same on
every run. Breaking replication before the first SET instead would also keep from the replica the events
written before the failover (the ones this test wants delivered from the new primary), and a Sentinel
does not promote a replica whose link has been down for long."""
from __future__ import annotations

import time
import uuid

import pytest
import requests

from bus import intake, journal, settings
from bus.journal import templates
from conftest import wait_until
from sentinels import RedisSet, forget_templates_on_replica, template_keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def replicated(redis_set: RedisSet) -> None:
    """Wait until the replica holds every write the primary has taken so far."""
    assert redis_set.primary.client().wait(1, 10_000) >= 1, "the replica did not confirm the writes"


def test_a_failover_to_a_replica_without_the_templates_delivers_events_before_and_after_it_once_each(ha):
    redis_set, receiver, bus = ha
    # A replica's ack, as a set that must lose nothing runs: an accept refused for its template is confirmed
    # (WAIT) when it runs again, and /healthz is 200 only once the old primary follows the new one.
    env, url, worker = bus(BUS_ACK_REPLICAS="1", BUS_ACK_TIMEOUT_MS="2000")
    bus_intake = intake.load(settings.load(env))
    name = uuid.uuid4().hex[:8]
    before = requests.post(f"{url}/api.{name}", json={"before": "http"}, timeout=10)
    assert before.status_code == 202, before.text
    warm = before.json()["ids"] + intake.accept(bus_intake, f"api.{name}", [{"before": "emit"}])
    wait_until(lambda: sorted(receiver.ids(f"/api/{name}/")) == sorted(warm), 20, what="the first events")

    # An event the endpoint refuses until after the failover: it waits in the retry schedule, and the
    # worker queues each retry with its own template.
    retried_path = f"/api/{name}r/"
    receiver.script(retried_path, *[503] * 200)
    (retried,) = intake.accept(bus_intake, f"api.{name}r", [{"before": "retried"}])
    wait_until(lambda: len(receiver.to(retried_path)) >= 2, 20, what="the event to be retried")

    replicated(redis_set)
    old_keys = template_keys(redis_set.primary)
    mine = templates.for_route("api").key.encode()
    assert mine in old_keys and len(old_keys) >= 3, "this process's, the ingress's and the worker's templates"
    forget_templates_on_replica(redis_set.replica)
    new = redis_set.failover()
    assert new is redis_set.replica
    # The old primary takes writes until a Sentinel demotes it, and loses them when it syncs from the new one.
    wait_until(lambda: redis_set.primary.client().info("replication")["role"] == "slave", 20,
               what="the old primary to be demoted")
    assert mine not in template_keys(new), "the new primary has not got this process's template"
    assert len(old_keys - template_keys(new)) >= 2, "nor the ingress's"
    assert (journal.load(new.client(), retried) or {}).get("status") == journal.RETRYING

    wait_until(lambda: requests.get(f"{url}/healthz", timeout=10).status_code == 200, 30,
               what="the ingress to find the new primary")
    refused_before = receiver.unscript(retried_path)
    wait_until(lambda: (journal.load(new.client(), retried) or {}).get("status") == journal.DELIVERED, 30,
               what="the retried event delivered from the new primary's schedule")

    # No message of the route coming (the worker is idle now): each accept must queue one, with its template.
    client = new.client()
    client.delete(journal.filling_key("api"))
    posted = requests.post(f"{url}/api.{name}", json={"after": "http"}, timeout=10)
    assert posted.status_code == 202, posted.text
    client.delete(journal.filling_key("api"))
    emitted = intake.accept(bus_intake, f"api.{name}", [{"after": "emit"}])
    after = posted.json()["ids"] + emitted
    wait_until(lambda: set(after) <= set(receiver.ids(f"/api/{name}/")), 30, what="the events accepted after")
    time.sleep(1.5)  # a second copy of any of them (a retry a second later) would have arrived by now
    ids = receiver.ids(f"/api/{name}/")
    assert sorted(ids) == sorted(warm + after), "each event accepted on either primary delivered once"
    assert len(receiver.to(retried_path)) == refused_before + 1, "the retried event answered 200 once"
    assert old_keys <= template_keys(new), "the ingress, emit and the worker stored their templates again"
    assert worker.proc.poll() is None, "the same worker delivered through the failover"
