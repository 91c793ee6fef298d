"""The console's route filter with a fan-out route's own name, in a real headless Chromium: each event once with
its destinations' statuses, and the replay of the selected ones sends only their dead destination's copy."""
from __future__ import annotations

import requests

from bus import journal
from conftest import FANOUT_ROUTE, Receiver, bus_env, start_ingress, start_worker, wait_until


def test_console_lists_a_fan_out_routes_events_once_and_replays_their_dead_copies(own_redis, tmp_path, page):
    receiver = Receiver()
    receiver.script("/b", *[(422, {}, b"no")] * 2)
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "api.toml").write_text(FANOUT_ROUTE.format(url=receiver.url))
    env = bus_env(own_redis.url, routes)
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    client = own_redis.client()
    try:
        ids = [requests.post(f"{url}/api.x", json={"n": n}, timeout=10).json()["ids"][0] for n in range(2)]
        wait_until(lambda: all(journal.load(client, f"{i}.b")["status"] == journal.DEAD for i in ids)
                   and all(journal.load(client, f"{i}.a")["status"] == journal.DELIVERED for i in ids), 20,
                   what="a to deliver both and b to give up on both")

        assert page.goto(f"{url}/console?route=api").status == 200
        rows = page.locator("#events tbody tr")
        wait_until(lambda: sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.id)")) == sorted(ids), 10,
                   what="each event once, by its own id")
        status = page.text_content(f"#events tbody tr[data-id='{ids[0]}'] td:nth-child(5)")
        assert status.startswith("dead") and "a: delivered" in status and "b: dead" in status

        page.click(f"#events tbody tr[data-id='{ids[0]}'] td:nth-child(3)")
        page.locator("#detail").wait_for()
        page.locator("#detail-fields", has_text="a: delivered (1), b: dead (1)").wait_for()

        page.check("#select-all")
        assert page.text_content("#replay") == "Replay 2 selected dead events"
        page.click("#replay")
        page.locator("#message", has_text="replayed 2 of 2 selected").wait_for()
        wait_until(lambda: all(journal.load(client, f"{i}.b")["status"] == journal.DELIVERED for i in ids), 20,
                   what="the dead copies replayed and delivered")
        assert len(receiver.to("/a")) == 2, "the delivered destination was sent nothing again"
        page.click("#search")
        wait_until(lambda: all("a: delivered" in t and "b: delivered" in t
                               for t in rows.evaluate_all("rs => rs.map(r => r.cells[4].textContent)")), 10,
                   what="the list to show both destinations delivered")
    finally:
        ingress.stop()
        worker.stop()
        receiver.stop()
