"""The worker's unacked entry (bus/kombu_fixes.py): kombu's consumer writes it, with the tag in the
worker's held set, before a message's task is handed over, and reads Redis's reply only after the
hand-off, so the task does not wait a round trip for it. Real Redis and kombu's own consumer."""
from __future__ import annotations

import contextlib

import pytest
import redis
from kombu import Connection, Consumer, Producer, Queue

import bus.celery  # noqa: F401  (applies bus.kombu_fixes, as the worker does)
from bus import kombu_fixes
from conftest import wait_until

DB = 8  # a database of its own on the session Redis: nothing else writes there
HELD = "bus:held:test-worker"


@pytest.fixture()
def url(bus):
    url = bus.redis.url.rsplit("/", 1)[0] + f"/{DB}"
    redis.Redis.from_url(url).flushdb()
    kombu_fixes.held_key = HELD
    yield url
    kombu_fixes.held_key = None
    redis.Redis.from_url(url).flushdb()


@contextlib.contextmanager
def consume_one(url: str, on_message):
    """Publish one message to queue `q` and let kombu's consumer deliver it to `on_message`; the body of
    the `with` runs before the channel closes (which restores what is unacked)."""
    queue = Queue("q", routing_key="q")
    with Connection(url) as conn:
        Producer(conn.channel()).publish({"n": 1}, routing_key="q", declare=[queue], serializer="json")
        with Consumer(conn.channel(), queues=[queue], callbacks=[on_message], accept=["json"]):
            conn.drain_events(timeout=5)
            yield


def test_the_unacked_entry_is_sent_before_the_hand_off_and_read_after_it(url):
    client = redis.Redis.from_url(url)
    seen: dict = {}

    def on_message(body, message):  # where Celery hands the task to a pool process
        seen["reply_unread"] = bool(kombu_fixes._unread)
        tag = message.delivery_tag
        # Already on its way to Redis: it lands without this process doing anything more.
        wait_until(lambda: client.hexists("unacked", tag) and client.sismember(HELD, tag), 5, what="the unacked entry")
        seen["message"] = message

    with consume_one(url, on_message):
        assert seen["reply_unread"], "the hand-off does not wait for the write's reply"
        assert kombu_fixes._unread == [], "read once the message was delivered"
        tag = seen["message"].delivery_tag
        assert client.zscore("unacked_index", tag) is not None
        seen["message"].ack()
        assert not client.hexists("unacked", tag) and not client.sismember(HELD, tag)
        assert client.zcard("unacked_index") == 0


def test_a_refused_unacked_write_raises_as_kombu_would_once_the_task_is_on_its_way(url):
    client = redis.Redis.from_url(url)
    client.set("unacked", "not a hash")  # HSET refused inside the transaction: WRONGTYPE at EXEC
    handed: list = []
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        with consume_one(url, lambda body, message: handed.append(body)):
            pass
    assert handed == [{"n": 1}]
    assert kombu_fixes._unread == []
