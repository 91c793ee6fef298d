"""Reads across both tiers against a real Redis and each real archive: one listing newest first,
one cursor through both, Redis's record over an older archived row, and a clear answer when the
archive does not answer."""
from __future__ import annotations

import time

import pytest

from archivekit import HOT, deliver, outage
from bus import journal
from bus.archive import open_store, tiers
from bus.archive.mover import Mover
from bus.errors import ArchiveUnavailable, EventNotFound
from bus.filters import EventFilter

pytestmark = pytest.mark.integration


@pytest.fixture
def client(own_redis):
    return own_redis.client()


def archive_some(client, store, n: int, tag: str = "api.orders") -> list[str]:
    ids = deliver(client, n, age=HOT + 60, tag=tag)
    assert Mover(client, store, HOT, 7 * 86400, owner="tests").tick().moved == n
    return ids


def every_page(client, store, f: EventFilter, limit: int) -> list[dict]:
    seen, cursor = [], None
    for _ in range(1000):
        page = tiers.find(client, store, f, limit=limit, cursor=cursor)
        assert not page.unavailable
        seen += page.events
        if page.cursor is None:
            return seen
        cursor = page.cursor
    raise AssertionError("paging never ended")


def test_one_listing_pages_through_both_tiers_newest_first_with_nothing_missed_or_repeated(client, store):
    archived = archive_some(client, store, 40)
    hot = deliver(client, 15, age=0)
    seen = every_page(client, store, EventFilter(), limit=7)
    assert [e["id"] for e in seen] == list(reversed(archived + hot))
    assert {e["tier"] for e in seen[:15]} == {"redis"} and {e["tier"] for e in seen[15:]} == {"archive"}
    delivered = every_page(client, store, EventFilter(status="delivered", tag="api.**"), limit=50)
    assert len(delivered) == 55
    assert every_page(client, store, EventFilter(status="queued"), limit=50) == []


def test_a_tag_pattern_and_a_time_window_narrow_the_archive_side_too(client, store):
    archive_some(client, store, 10, tag="api.orders")
    users = archive_some(client, store, 5, tag="api.users")
    seen = every_page(client, store, EventFilter(tag="*.users"), limit=3)
    assert [e["id"] for e in seen] == list(reversed(users))
    assert every_page(client, store, EventFilter(since=time.time() - 1), limit=10) == []


def test_an_event_back_in_redis_is_shown_from_there_and_once(client, store):
    (event_id,) = archive_some(client, store, 1)
    # A replay to its route puts the archived record back into Redis, queued, in one transaction.
    from bus.broker.messages import new_message

    summary = tiers.summaries(client, store, [event_id])[0]
    assert summary["tier"] == "archive"
    message = new_message([(event_id, summary["tag"], 2)], journal.queue_name("api"))
    journal.requeue(client, [summary], [(message, "api")], tiers.restorable(store, [summary]))
    seen = every_page(client, store, EventFilter(), limit=10)
    assert [(e["id"], e["tier"], e["status"]) for e in seen] == [(event_id, "redis", "queued")]
    assert every_page(client, store, EventFilter(status="delivered"), limit=10) == []
    shown = tiers.show(client, store, event_id)
    assert shown["tier"] == "redis" and shown["body"] == {"n": 0} and len(shown["attempt_log"]) == 1


def test_one_archived_event_shows_its_body_headers_and_attempts(client, store):
    (event_id,) = archive_some(client, store, 1)
    shown = tiers.show(client, store, event_id)
    assert (shown["tier"], shown["status"], shown["attempts"], shown["body"], shown["headers"]) == (
        "archive", "delivered", 1, {"n": 0}, {"X-Trace": "t"})
    assert shown["attempt_log"][0]["status_code"] == 200 and shown["copies"] == []
    with pytest.raises(EventNotFound):
        tiers.show(client, store, "01900000-0000-7000-8000-000000000000")


def test_purge_deletes_from_both_tiers(client, store, archive_url):
    archived = archive_some(client, store, 5)
    hot = deliver(client, 3, age=0)
    chosen = list(tiers.iter_matching(client, store, EventFilter(status="delivered")))
    assert tiers.purge(client, store, chosen) == 8
    assert every_page(client, store, EventFilter(), limit=10) == []
    assert store.get_many(archived + hot) == []


def test_an_archive_that_does_not_answer_is_named_and_redis_still_answers(client, store, archive_url, tmp_path):
    (archived,) = archive_some(client, store, 1)
    hot = deliver(client, 2, age=0)
    if archive_url.startswith("sqlite"):
        (tmp_path / "not-a-file").mkdir()  # a volume not mounted where the file should be
        down, cm = open_store(f"sqlite:///{tmp_path / 'not-a-file'}"), None
    else:
        down, cm = store, outage(archive_url)
        cm.__enter__()
    try:
        page = tiers.find(client, down, EventFilter(), limit=10)
        assert [e["id"] for e in page.events] == list(reversed(hot))
        assert "did not answer" in page.unavailable["archive"]
        with pytest.raises(ArchiveUnavailable, match=f"event '{archived}' is not in Redis, and the archive"):
            tiers.show(client, down, archived)
        with pytest.raises(ArchiveUnavailable, match="nothing was done"):
            list(tiers.iter_matching(client, down, EventFilter(status="delivered")))
        assert tiers.show(client, down, hot[0])["tier"] == "redis"
        # Listings of what never leaves Redis do not need the archive at all.
        assert not tiers.find(client, down, EventFilter(status="dead"), limit=10).unavailable
    finally:
        if cm:
            cm.__exit__(None, None, None)
