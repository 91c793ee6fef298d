"""With BUS_LOG_FORMAT=json a worker writes one JSON object a line, one line per delivery attempt with the
event id, tag, route, attempt, status or error and duration, and never the route's credentials."""
from __future__ import annotations

import json
import uuid

from bus import journal
from conftest import start_worker, wait_until

QUERY = "?token=query-secret-value"
SECRETS = ("header-secret-value", "query-secret-value")


def test_json_worker_logs_one_parseable_line_per_attempt_and_no_secret(bus):
    names = {kind: f"{kind}{uuid.uuid4().hex[:6]}" for kind in ("ok", "retry", "dead")}
    bus.receiver.script(f"/secret/{names['retry']}{QUERY}", 503)
    bus.receiver.script(f"/secret/{names['dead']}{QUERY}", (422, {}, b"no"))
    ids = {kind: bus.post(f"secret.{name}", '{"card": "4111"}').json()["ids"][0] for kind, name in names.items()}
    log = bus.tmp / f"worker-json-{uuid.uuid4().hex[:6]}.log"
    worker = start_worker({**bus.env, "BUS_LOG_FORMAT": "json"}, log, "secret")
    try:
        client = bus.redis.client()
        wait_until(lambda: all(journal.load(client, i)["status"] in (journal.DELIVERED, journal.DEAD)
                               for i in ids.values()), 20, what="the secret route's events to settle")
    finally:
        worker.stop()
    sent = bus.receiver.to("/secret/")
    assert sent and all(r.headers["Authorization"] == "Bearer header-secret-value" for r in sent), \
        "the endpoint did get the credentials: the logs had something to leak"

    text = log.read_text()
    assert not any(secret in text for secret in SECRETS)
    # The journal shows every attempt's URL to @journal readers: the query token is redacted there too.
    shown = json.dumps([journal.show(client, i) for i in ids.values()])
    assert "/secret/" in shown and not any(secret in shown for secret in SECRETS), "a secret reached the journal"
    lines = [line for line in text.splitlines() if line.strip()]
    # Celery prints its shutdown notice straight to the terminal, outside logging; everything else is JSON.
    records = [json.loads(line) for line in lines if not line.startswith("worker: ")]
    attempts = {kind: [r for r in records if r.get("event_id") == event_id] for kind, event_id in ids.items()}

    (ok,) = attempts["ok"]
    assert ok["level"] == "INFO" and ok["logger"] == "bus.delivery"
    assert (ok["tag"], ok["route"], ok["attempt"], ok["status_code"], ok["verdict"]) == \
        (f"secret.{names['ok']}", "secret", 1, 200, "delivered")
    assert isinstance(ok["duration"], float) and 0 <= ok["duration"] < 5
    first, second = attempts["retry"]
    assert (first["attempt"], first["status_code"], first["verdict"]) == (1, 503, "retry") and first["retry_in"] > 0
    assert (second["attempt"], second["status_code"], second["verdict"]) == (2, 200, "delivered")
    (dead,) = attempts["dead"]
    assert (dead["status_code"], dead["verdict"]) == (422, "dead")
