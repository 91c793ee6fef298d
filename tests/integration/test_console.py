"""The journal console in a real headless Chromium (Debian's, driven by Playwright): filter events, open one,
replay dead ones with one click and see them delivered. A screenshot lands in test-artifacts/console.png."""
from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import requests

from bus import journal
from conftest import wait_until

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def dead_events(bus, name: str) -> list[str]:
    bus.receiver.script(f"/ops/ops.{name}.orders", *[(422, {}, b'{"error": "unknown customer"}')] * 2)
    ids = [bus.post(f"ops.{name}.orders", json.dumps({"order": i, "note": "<b>not bold</b>"})).json()["ids"][0]
           for i in range(2)]
    client = bus.redis.client()
    wait_until(lambda: all(journal.load(client, i)["status"] == journal.DEAD for i in ids), 15, what="dead letters")
    return ids


def test_console_filters_opens_an_event_and_replays_dead_ones_until_delivered(bus, page):
    name = f"c{uuid.uuid4().hex[:8]}"
    dead = dead_events(bus, name)
    (delivered,) = bus.post(f"ops.{name}.audit", '{"fine": true}').json()["ids"]
    client = bus.redis.client()
    wait_until(lambda: journal.load(client, delivered)["status"] == journal.DELIVERED, 15, what="the delivered one")

    assert page.goto(f"{bus.url}/console").status == 200
    page.locator("#routes tbody tr[data-route='ops']").wait_for()

    page.select_option("#status", "dead")
    page.fill("#tag", f"ops.{name}.**")
    page.fill("#since", "1h")
    page.click("#search")
    rows = page.locator("#events tbody tr")
    wait_until(lambda: sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(dead), 10,
               what="the two dead events, and not the delivered one")

    page.click(f"#events tbody tr[data-id='{dead[0]}'] td:nth-child(3)")
    page.locator("#detail").wait_for()
    assert page.text_content("#detail-id") == dead[0]
    body = json.loads(page.text_content("#detail-body"))
    assert body == {"order": 0, "note": "<b>not bold</b>"}
    assert page.locator("#detail-body b").count() == 0, "journal data is shown as text, never as HTML"
    assert page.locator("#detail-attempts tbody tr").count() == 1
    assert "422" in page.text_content("#detail-attempts tbody tr")
    assert "unknown customer" in page.text_content("#detail")

    page.check("#select-all")
    assert page.text_content("#replay") == "Replay 2 selected dead events"
    page.click("#replay")
    page.locator("#message", has_text="replayed 2 of 2 selected").wait_for()
    wait_until(lambda: all(journal.load(client, i)["status"] == journal.DELIVERED for i in dead), 20,
               what="the replayed events delivered")

    page.select_option("#status", "delivered")
    page.click("#search")
    wait_until(lambda: sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(dead + [delivered]),
               10, what="all three listed as delivered")
    page.click(f"#events tbody tr[data-id='{dead[0]}'] td:nth-child(3)")
    page.locator("#detail-attempts tbody tr").nth(1).wait_for()
    assert page.text_content("#detail-fields").count("delivered") == 1
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)
    assert len(bus.receiver.to(f"/ops/ops.{name}.orders")) == 4, "each dead event sent once more, no more"


def test_replay_api_takes_ids_checks_them_and_only_replays_events_in_the_asked_status(bus):
    name = f"c{uuid.uuid4().hex[:8]}"
    dead = dead_events(bus, name)
    replay = f"{bus.url}/events/replay"
    bad = requests.post(replay, json={"ids": ["not-an-id"]}, timeout=10)
    assert bad.status_code == 400 and "not an event id" in bad.json()["error"]
    assert requests.post(replay, json={"ids": []}, timeout=10).status_code == 400
    as_form = requests.post(replay, data=json.dumps({"ids": dead}), headers={"Content-Type": "text/plain"}, timeout=10)
    assert as_form.status_code == 415, "a cross-site form post cannot replay"
    unknown = str(uuid.uuid4())
    done = requests.post(replay, json={"ids": [dead[0], unknown]}, timeout=10).json()
    assert (done["matched"], done["replayed"], done["ids"]) == (1, 1, [dead[0]])
    client = bus.redis.client()
    wait_until(lambda: journal.load(client, dead[0])["status"] == journal.DELIVERED, 15, what="the one replayed")
    again = requests.post(replay, json={"ids": dead}, timeout=10).json()
    assert (again["matched"], again["ids"]) == (1, [dead[1]]), "delivered ones are not dead: left alone"


def test_console_reads_a_guarded_journal_with_a_journal_token(bus, page, tmp_path):
    """Under BUS_TOKENS the console's own calls carry the operator's token (kept in the tab's sessionStorage)."""
    from bus.auth import new_token
    from conftest import start_ingress

    operator, digest = new_token()
    (tmp_path / "tokens").write_text(f"{digest}  @journal  on-call\n")
    ingress, url = start_ingress({**bus.env, "BUS_TOKENS": str(tmp_path / "tokens")}, tmp_path / "ingress.log")
    try:
        name = f"g{uuid.uuid4().hex[:8]}"
        (event_id,) = bus.post(f"parked.{name}", '{"guarded": true}').json()["ids"]
        assert requests.get(f"{url}/events", timeout=10).status_code == 401, "the journal API is guarded"
        page.add_init_script(f"sessionStorage.setItem('busToken', {json.dumps(operator)})")
        page.goto(f"{url}/console?tag=parked.{name}")
        page.locator(f"#events tbody tr[data-id='{event_id}']").wait_for()
        assert operator not in page.content(), "the token never lands in the page"
    finally:
        ingress.stop()


def test_console_shows_each_failing_endpoint_of_a_route_with_its_breaker_and_what_it_holds_back(bus, page):
    """`parked` has no worker: its endpoint's state is built by hand, as the workers would leave it."""
    from bus import endpoints

    tag = f"parked.k{uuid.uuid4().hex[:8]}"
    url = f"{bus.receiver.url}/parked/{tag.split('.')[-1]}"
    key = endpoints.key_for("parked", url)
    client = bus.redis.client()
    (held,) = bus.post(tag, "{}").json()["ids"]
    for _ in range(5):
        journal.breakers.failed(client, key, time.time(), 5, 60.0, 0.0)
    # Open for minutes, as after a long run of failures: the first step (a second or two) could lapse
    # into half-open while a loaded machine starts the browser.
    client.hset(journal.breaker_key("parked", key.digest), "open_until", repr(time.time() + 300))
    journal.breakers.hold_back(client, journal.load(client, held), key, time.time())
    try:
        assert page.goto(f"{bus.url}/console").status == 200
        line = page.locator(f"#routes tbody tr[data-route='parked'] .endpoint-state[data-endpoint='{key.endpoint}']")
        line.wait_for()
        text = line.text_content()
        assert text.startswith(f"{key.endpoint}: failing since ") and "5 in a row, breaker open, 1 held back" in text
        assert "failing" in page.text_content("#routes tbody tr[data-route='parked'] td:last-child")
        ARTIFACTS.mkdir(exist_ok=True)
        page.locator("#routes").screenshot(path=str(ARTIFACTS / "console-endpoints.png"))
    finally:
        for name in (f"bus:breaker:parked:{key.digest}", f"bus:parked:parked:{key.digest}"):
            client.delete(name)
        client.zrem("bus:breakers:parked", key.digest)
        client.zrem("bus:failing:parked", key.digest)
