"""The two archive stores keep the same contract: rows by event id, pages newest first, retention,
and ArchiveUnavailable (never a driver's error) while the database does not answer."""
from __future__ import annotations

import time

import pytest

from archivekit import outage, rows
from bus.archive.rows import ArchivedEvent, Scan, scan_for
from bus.errors import ArchiveUnavailable
from bus.events import new_id
from bus.filters import EventFilter

pytestmark = pytest.mark.integration
DAY = 86400


def event(received: float, tag: str = "api.orders", route: str = "api", attempts: int = 1,
          event_id: str | None = None) -> ArchivedEvent:
    return ArchivedEvent(
        id=event_id or new_id(int(received * 1000)), tag=tag, route=route, status="delivered", received=received,
        attempts=attempts, last="200", round=0, replayed=None, body=b'{"n": 1}', headers=b'{"X-Trace": "t"}',
        attempt_log=b'[{"attempt": 1, "status_code": 200}]', copies=b"[]")


def test_an_event_written_twice_is_one_row(store, archive_url):
    e = event(time.time())
    store.write([e])
    store.write([e])
    assert rows(archive_url) == [(e.id, 1)]
    assert store.get(e.id) == e


def test_a_later_write_of_the_same_event_replaces_its_row(store, archive_url):
    # A replayed event delivered again comes back with more attempts: the newer record wins.
    e = event(time.time())
    store.write([e])
    again = ArchivedEvent(**{**e.__dict__, "attempts": 3, "attempt_log": b"[1,2,3]"})
    store.write([again])
    assert rows(archive_url) == [(e.id, 3)]
    assert store.get(e.id).attempt_log == b"[1,2,3]"


def test_pages_come_newest_first_and_resume_after_the_last_one_even_on_equal_times(store):
    now = time.time()
    same = [event(now - 5, event_id=f"0000000{i}-0000-7000-8000-000000000000") for i in range(3)]
    others = [event(now - 10 * i) for i in range(1, 6)]
    store.write(same + others)
    seen, after = [], None
    while True:
        page = store.scan(Scan(limit=2, after=after))
        if not page:
            break
        seen += page
        after = (page[-1]["received"], page[-1]["id"])
    assert [s["id"] for s in seen] == [e.id for e in sorted(same + others, key=lambda e: (e.received, e.id),
                                                           reverse=True)]
    assert all(s["tier"] == "archive" and s["status"] == "delivered" for s in seen)


def test_a_scan_narrows_by_route_time_and_tag(store):
    now = time.time()
    store.write([event(now - 1, "api.orders"), event(now - 2, "api.users"), event(now - 3, "apix.other"),
                 event(now - 4, "web.hits", route="web"), event(now - 100, "api.old")])

    def tags(f: EventFilter) -> list[str]:
        return [s["tag"] for s in store.scan(scan_for(f, 10, None)) if f.matches_tag(s["tag"])]

    assert tags(EventFilter(tag="api.orders")) == ["api.orders"]
    assert tags(EventFilter(tag="api.**")) == ["api.orders", "api.users", "api.old"]
    assert tags(EventFilter(route="web")) == ["web.hits"]
    assert tags(EventFilter(since=now - 50, until=now - 1.5)) == ["api.users", "apix.other", "web.hits"]


def test_delete_removes_only_the_ids_given(store, archive_url):
    kept, gone = event(time.time()), event(time.time())
    store.write([kept, gone])
    assert store.delete([gone.id, new_id()]) == 1
    assert rows(archive_url) == [(kept.id, 1)]


def test_retention_drops_what_was_received_before_the_cutoff(store, archive_url):
    now = time.time()
    old, young = event(now - 10 * DAY), event(now)
    store.write([old, young])
    assert store.drop_before(now - 7 * DAY) >= 1
    assert rows(archive_url) == [(young.id, 1)]


def test_an_archive_that_does_not_answer_raises_archive_unavailable_then_recovers(store, archive_url):
    store.write([event(time.time())])
    with outage(archive_url):
        with pytest.raises(ArchiveUnavailable, match="did not answer"):
            store.write([event(time.time())])
    store.write([event(time.time())])
    assert len(rows(archive_url)) == 2


def test_a_page_of_50_from_a_month_of_history_answers_well_under_a_second(store):
    now = time.time()
    n = 60_000
    tags = [f"{app}.{kind}" for app in ("api", "web", "billing", "mobile") for kind in ("orders", "users", "hits")]
    history = [event(now - 30 * DAY * i / n, tags[i % len(tags)], route=tags[i % len(tags)].split(".")[0])
               for i in range(n)]
    for start in range(0, n, 5000):
        store.write(history[start:start + 5000])
    for f in (EventFilter(), EventFilter(tag="billing.**"), EventFilter(route="mobile", tag="mobile.users"),
              EventFilter(since=now - 20 * DAY, until=now - 10 * DAY)):
        started = time.monotonic()
        page = [s for s in store.scan(scan_for(f, 200, None)) if f.matches_tag(s["tag"])][:50]
        took = time.monotonic() - started
        assert len(page) == 50, f
        assert took < 0.3, (f, took)
