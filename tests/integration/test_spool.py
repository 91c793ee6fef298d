"""A producer's own spool (bus.Producer): emit returns once the event is on local disk, survives Redis
being down and the producer being killed, and each id reaches the journal once. Each test has a
Redis of its own (it stops and restarts it) and no worker, so what was sent stays queued to count."""
from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest
import redis

import bus
from archivekit import rows
from bus import InvalidBody, InvalidTag, NoRoute, SpoolError, SpoolFull, SpoolLocked, intake, journal, settings
from bus.journal import keys
from bus.spool import frames, inspect
from bus.spool.layout import place
from bus.spool.sender import Sender
from bus.spool.store import Spool
from bus.wire.pipelined import SharedPipe
from conftest import Receiver, RedisServer, bus_env, run_bus, start_worker, wait_until, waiting_for_a_task

ROUTE = "spooled"
TAG = f"{ROUTE}.orders"


@pytest.fixture()
def redis_server(tmp_path):
    """A Redis of the test's own, not yet started."""
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    yield server
    server.kill()


@pytest.fixture()
def env(tmp_path, redis_server):
    routes = tmp_path / "routes"
    routes.mkdir()
    # Nothing consumes the route: what the spool sends stays queued, to be counted.
    (routes / f"{ROUTE}.toml").write_text(f'match = "{ROUTE}.*"\nendpoint = "http://127.0.0.1:9/${{tag}}"\n')
    return bus_env(redis_server.url, routes, BUS_REDIS_TIMEOUT="1")


def producer(env, directory, **options) -> bus.Producer:
    return bus.Producer(directory, config=settings.load(env), **options)


def journal_holds_each_once(client, ids: list[str]) -> None:
    """Each id once in the journal, and once in what waits for a task of the route (pending list and queue)."""
    assert len(set(ids)) == len(ids)
    queued = client.zrange(journal.index_key(journal.QUEUED, ROUTE), 0, -1)
    assert sorted(i.decode() for i in queued) == sorted(ids)
    assert int(client.hget(journal.COUNTERS, f"accepted:{ROUTE}") or 0) == len(ids)
    waiting = collections.Counter(waiting_for_a_task(client, ROUTE))
    assert set(waiting) == set(ids)
    assert max(waiting.values()) == 1


def test_accepting_an_id_already_journaled_makes_no_second_journal_or_pending_entry(redis_server):
    redis_server.start()
    pipe = SharedPipe(redis_server.url, 5)
    client = redis_server.client()
    events = [journal.NewEvent(str(uuid.uuid4()), f"{ROUTE}.t", ROUTE, b'{"n":%d}' % i, time.time()) for i in range(5)]
    assert journal.accept_batches(pipe, [(events[:3], 100)]) == 3
    client.hset(journal.event_key(events[0].id), "status", journal.DELIVERED)  # it moved on meanwhile
    # The spool sends the batch again, with two more (a reply lost, or a crash before the spool forgot it).
    assert journal.accept_batches(pipe, [(events, 100)]) == 2
    journal_holds_each_once(client, [e.id for e in events])
    assert client.hget(journal.event_key(events[0].id), "status") == journal.DELIVERED.encode()
    assert journal.accept_batches(pipe, [(events, 100)]) == 0
    journal_holds_each_once(client, [e.id for e in events])


KILLED_CHILD = """
import os, signal, sys
import bus
p = bus.Producer(sys.argv[1])
ids = [p.emit("%s", {"n": n}) for n in range(1000)]
with open(sys.argv[2], "w") as f:
    f.write("\\n".join(ids))
os.kill(os.getpid(), signal.SIGKILL)
""" % TAG


def test_1000_emits_while_redis_is_down_survive_sigkill_and_a_new_producer_delivers_each_once(env, redis_server, tmp_path):
    spool, ids_file = tmp_path / "spool", tmp_path / "ids"
    child = subprocess.run([sys.executable, "-c", KILLED_CHILD, str(spool), str(ids_file)], env=env,
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    ids = ids_file.read_text().split()
    assert len(ids) == 1000
    redis_server.start()
    p = producer(env, spool)
    assert p.stats()["spooled"] == 1000
    assert p.close(30)
    journal_holds_each_once(redis_server.client(), ids)
    assert inspect(spool).count == 0


def test_a_batch_redis_took_before_the_producer_died_is_sent_again_and_journaled_once(env, redis_server, tmp_path):
    p = producer(env, tmp_path / "spool")
    ids = p.emit_many(TAG, [{"n": n} for n in range(100)])
    p.close(0.1)
    redis_server.start()
    # The sender's step without its last part: Redis takes the batch, the process dies before the cursor moves.
    spool = Spool(tmp_path / "spool")
    batch = spool.read(60)
    Sender(spool, intake.load(settings.load(env)))._send(batch)
    spool.close()
    p = producer(env, tmp_path / "spool")
    assert p.stats()["spooled"] == 100
    assert p.close(10)
    journal_holds_each_once(redis_server.client(), ids)


def test_a_batch_sent_again_after_its_events_were_delivered_and_archived_is_journaled_and_delivered_once(
        redis_server, tmp_path):
    redis_server.start()
    receiver = Receiver()
    receiver.start()
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "hooks.toml").write_text(f'match = "hooks.*"\nendpoint = "{receiver.url}/hooks/${{tag[1]}}"\n')
    # bus_env's archive: SQLite beside the routes. A hot window of a second: archived within seconds.
    env = bus_env(redis_server.url, routes, BUS_HOT_WINDOW="1s", BUS_REDIS_TIMEOUT="1")
    worker = start_worker(env, tmp_path / "worker.log")
    client = redis_server.client()
    try:
        spool = tmp_path / "spool"
        p = producer(env, spool)
        unsent = (spool / "cursor").read_bytes()  # the cursor before the batch went
        ids = p.emit_many("hooks.orders", [{"n": n} for n in range(50)])
        assert p.close(10)
        wait_until(lambda: sorted(receiver.ids("/hooks/")) == sorted(ids), 30, 0.1, what="the 50 events delivered")
        wait_until(lambda: client.exists(*[journal.event_key(i) for i in ids]) == 0, 30, 0.1,
                   what="the 50 events archived out of Redis")
        # The producer had died after Redis took the batch and before its cursor moved past it.
        (spool / "cursor").write_bytes(unsent)
        p = producer(env, spool)
        assert p.stats()["spooled"] == 50
        assert p.close(10)
        assert int(client.hget(journal.COUNTERS, "accepted:hooks")) == 50
        assert client.zcard(journal.index_key(journal.QUEUED)) == 0 and not waiting_for_a_task(client, "hooks")
        assert sorted(i for i, _ in rows(env["BUS_ARCHIVE_URL"])) == sorted(ids)
        assert sorted(receiver.ids("/hooks/")) == sorted(ids)  # nothing is left that could be delivered again
    finally:
        worker.stop()
        receiver.stop()


def test_a_later_part_of_a_send_whose_earlier_part_redis_did_not_take_is_refused_so_nothing_is_skipped(redis_server):
    redis_server.start()
    pipe = SharedPipe(redis_server.url, 5)
    client = redis_server.client()
    events = [journal.NewEvent(str(uuid.uuid4()), f"{ROUTE}.t", ROUTE, b'{"n":%d}' % i, time.time()) for i in range(6)]
    places = [place(7, 100 * i) for i in range(6)]

    def mark(first: int, last: int, after: str = "") -> journal.SpoolMark:
        return journal.SpoolMark("a-spool", places[first:last], after, 600)

    with pytest.raises(redis.ResponseError, match="BUSGAP"):
        journal.accept_batches(pipe, [(events[3:], 100)], [mark(3, 6, after=places[2])])
    assert client.zcard(journal.index_key(journal.QUEUED)) == 0
    assert journal.accept_batches(pipe, [(events[:3], 100), (events[3:], 100)],
                                  [mark(0, 3), mark(3, 6, after=places[2])]) == 6
    assert client.hget(journal.spool_mark_key("a-spool"), ROUTE) == places[5].encode()
    assert 590 < client.ttl(journal.spool_mark_key("a-spool")) <= 600
    client.delete(*[journal.event_key(e.id) for e in events])  # gone from Redis: archived, say
    assert journal.accept_batches(pipe, [(events, 100)], [mark(0, 6)]) == 0
    assert int(client.hget(journal.COUNTERS, f"accepted:{ROUTE}")) == 6


def test_frames_sent_whole_are_journaled_as_their_fields_and_a_malformed_one_refuses_its_call_unwritten(redis_server):
    redis_server.start()
    pipe = SharedPipe(redis_server.url, 5)
    client = redis_server.client()
    events = [journal.NewEvent(str(uuid.uuid4()), f"{ROUTE}.t", ROUTE, b'{"n":%d,"s":"a\\nb"}' % i, time.time())
              for i in range(3)]
    payloads = [frames.encode(e)[frames.HEADER.size:] for e in events]
    places = [place(3, 100 * i) for i in range(3)]
    mark = journal.SpoolMark("a-spool", places, "", 600)
    bad = {
        "no body line": payloads[1].rsplit(b"\n", 1)[0],
        "another route": payloads[1].replace(b"\n" + ROUTE.encode() + b"\n", b"\nelsewhere\n", 1),
        "a received time that is no number": payloads[1].replace(repr(events[1].received).encode(), b"soon", 1),
        "an empty id": payloads[1][payloads[1].index(b"\n"):],
    }
    for why, payload in bad.items():
        with pytest.raises(SpoolError, match=f"event 2 of this call is not a spool frame of route {ROUTE}"):
            journal.accept_frames(pipe, [([payloads[0], payload, payloads[2]], ROUTE, 100, "", mark)])
        assert client.dbsize() == 0, why  # refused before anything was written, the good ones too
    assert journal.accept_frames(pipe, [(payloads, ROUTE, 100, "", mark)]) == 3
    for e in events:
        record = client.hgetall(journal.event_key(e.id))
        assert record[b"tag"] == e.tag.encode() and record[b"body"] == e.body and record[b"route"] == ROUTE.encode()
        assert float(record[b"received"]) == e.received and record[b"headers"] == b""
    journal_holds_each_once(client, [e.id for e in events])
    assert client.hget(journal.spool_mark_key("a-spool"), ROUTE) == places[-1].encode()
    assert journal.accept_frames(pipe, [(payloads, ROUTE, 100, "", mark)]) == 0  # sent again: skipped


def each_once_across(env, redis_server, spool, mishap) -> None:
    """20 events sent, `mishap` done to the closed directory, then 20 more from a new Producer: all 40
    journaled once (none of the later ones skipped as if Redis had them)."""
    redis_server.start()
    p = producer(env, spool)
    first = p.emit_many(TAG, [{"n": n} for n in range(20)])
    assert p.close(10)
    mishap()
    p = producer(env, spool)  # its events must not take places Redis's mark already covers
    later = p.emit_many(TAG, [{"n": n} for n in range(20, 40)])
    assert p.close(10)
    journal_holds_each_once(redis_server.client(), first + later)


def test_events_emitted_after_a_power_loss_took_frames_redis_had_are_not_skipped(env, redis_server, tmp_path):
    spool = tmp_path / "spool"

    def power_loss() -> None:  # Redis had the frames; the disk never got them (no fsync yet), nor the cursor
        for segment in spool.glob("*.seg"):
            os.truncate(segment, 0)
        os.truncate(spool / "cursor", 0)

    each_once_across(env, redis_server, spool, power_loss)


def test_a_spool_directory_emptied_by_hand_is_named_anew_so_its_new_events_are_not_skipped(env, redis_server, tmp_path):
    spool = tmp_path / "spool"

    def emptied() -> None:  # all but its name: its segments would be numbered from 1 again
        for path in spool.iterdir():
            if path.name != "identity":
                path.unlink()

    each_once_across(env, redis_server, spool, emptied)


def test_a_copy_of_a_spool_directory_sends_under_a_name_of_its_own(tmp_path):
    first = Spool(tmp_path / "spool")
    first.close()
    shutil.copytree(tmp_path / "spool", tmp_path / "copy")
    original, copy = Spool(tmp_path / "spool"), Spool(tmp_path / "copy")
    assert original.identity == first.identity  # the same directory keeps its name
    assert copy.identity != first.identity  # Redis's marks of the original say nothing of the copy's events
    original.close()
    copy.close()
    assert Spool(tmp_path / "copy").identity == copy.identity


def test_spool_full_raises_naming_the_limit_and_directory_and_nothing_earlier_is_lost(env, redis_server, tmp_path):
    p = producer(env, tmp_path / "spool", max_bytes=20_000)
    ids = []
    with pytest.raises(SpoolFull, match=f"the spool {tmp_path / 'spool'} .*max_bytes is 20000"):
        for n in range(10_000):
            ids.append(p.emit(TAG, {"n": n, "pad": "x" * 50}))
    assert 100 < len(ids) < 10_000
    with pytest.raises(SpoolFull):
        p.emit_many(TAG, [{"n": -1, "pad": "x" * 60}])
    redis_server.start()
    assert p.flush(30)
    ids.append(p.emit(TAG, {"n": "after"}))  # room again
    assert p.close(30)
    journal_holds_each_once(redis_server.client(), ids)


def test_redis_restarting_in_the_middle_of_a_flush_neither_duplicates_nor_loses_an_id(env, redis_server, tmp_path):
    p = producer(env, tmp_path / "spool")
    ids = [i for n in range(300) for i in p.emit_many(TAG, [{"n": n, "i": i} for i in range(100)])]
    redis_server.start()
    client = redis_server.client()
    flushed = []
    flusher = threading.Thread(target=lambda: flushed.append(p.flush(60)))
    flusher.start()
    wait_until(lambda: int(client.hget(journal.COUNTERS, f"accepted:{ROUTE}") or 0) > 0, 30, 0.005,
               what="the flush to begin")
    redis_server.kill()
    assert p.stats()["spooled"] > 0, "the flush ended before Redis was killed: the test proved nothing"
    redis_server.start()  # AOF with appendfsync always: what Redis answered for is still there
    flusher.join(60)
    assert flushed == [True]
    assert p.close(10)
    journal_holds_each_once(redis_server.client(), ids)


def test_with_ack_replicas_an_unconfirmed_batch_stays_spooled_until_replicas_hold_it(env, redis_server, tmp_path):
    redis_server.start()  # no replica: WAIT answers 0
    p = producer({**env, "BUS_ACK_REPLICAS": "1", "BUS_ACK_TIMEOUT_MS": "50"}, tmp_path / "spool")
    event_id = p.emit(TAG, {"n": 1})
    assert "replica" in wait_until(lambda: p.stats()["last_error"], 10, what="an unconfirmed send")
    assert p.stats()["spooled"] == 1  # on the primary, but kept until confirmed
    assert redis_server.client().exists(journal.event_key(event_id))
    p.close(0.1)
    p = producer(env, tmp_path / "spool")  # replicas no longer asked for: sent again, journaled once
    assert p.close(10)
    journal_holds_each_once(redis_server.client(), [event_id])


def test_over_the_memory_mark_the_spool_holds_its_events_until_redis_has_room(env, redis_server, tmp_path):
    redis_server.start()
    client = redis_server.client()
    client.config_set("maxmemory", str(client.info("memory")["used_memory"] + 100_000))  # room for ~100 events
    p = producer({**env, "BUS_REDIS_MEMORY_HIGH": "0.5"}, tmp_path / "spool")
    ids = p.emit_many(TAG, [{"n": n} for n in range(50)])
    assert "maxmemory" in wait_until(lambda: p.stats()["last_error"], 10, what="a refusal for memory")
    assert p.stats()["spooled"] == 50
    client.config_set("maxmemory", "0")  # room again (workers drained it, or an operator raised it)
    assert p.flush(15)
    assert p.close(5)
    journal_holds_each_once(client, ids)


def test_many_threads_emitting_at_once_each_id_reaches_the_journal_once(env, redis_server, tmp_path):
    redis_server.start()
    p = producer(env, tmp_path / "spool")
    made: list[list[str]] = [[] for _ in range(8)]

    def emit(t: int) -> None:
        deadline = time.monotonic() + 20
        for n in range(500):
            if time.monotonic() > deadline:
                break
            made[t].append(p.emit(TAG, {"t": t, "n": n}))

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [i for part in made for i in part]
    assert len(ids) == 4000
    assert p.close(30)
    journal_holds_each_once(redis_server.client(), ids)


def test_bad_input_raises_at_emit_even_while_redis_is_down(env, tmp_path):
    p = producer(env, tmp_path / "spool")
    with pytest.raises(NoRoute):
        p.emit("nobody.here", {})
    with pytest.raises(InvalidTag):
        p.emit("bad tag", {})
    with pytest.raises(InvalidBody):
        p.emit_many(TAG, [{"a": 1}, "not an object"])
    assert p.stats()["spooled"] == 0
    started = time.monotonic()
    p.emit(TAG, {"a": 1})
    assert time.monotonic() - started < 0.5  # Redis being down costs emit nothing
    assert p.stats()["spooled"] == 1
    assert "Redis did not answer" in wait_until(lambda: p.stats()["last_error"], 10, what="a failed send")
    assert not p.close(0.5)
    assert not p.close(0.5)  # a second close says the same at once


def test_emit_checks_each_record_as_bus_emit_does_even_for_a_tag_it_already_took(env, tmp_path):
    p = producer(env, tmp_path / "spool")
    p.emit(TAG, {"n": 1})  # the tag's route is remembered from here on: emit's quick path
    with pytest.raises(InvalidBody, match="the body is a JSON array, not an object"):
        p.emit(TAG, [1, 2])
    with pytest.raises(InvalidBody, match="cannot be encoded as JSON"):
        p.emit(TAG, {"when": object()})
    with pytest.raises(InvalidTag):
        p.emit(TAG + " ", {"n": 2})
    assert p.stats()["spooled"] == 1
    p.close(0.1)


def test_stats_count_what_waits_how_old_it_is_and_what_was_sent(env, redis_server, tmp_path):
    with producer(env, tmp_path / "spool") as p:
        assert p.stats() == {"spooled": 0, "bytes": 0, "oldest_age": None, "emitted": 0, "sent": 0, "last_error": None}
        p.emit_many(TAG, [{"n": n} for n in range(10)])
        time.sleep(0.2)
        waiting = p.stats()
        assert (waiting["spooled"], waiting["emitted"], waiting["sent"]) == (10, 10, 0)
        assert waiting["bytes"] > 10 * len('{"n":0}')
        assert 0.2 <= waiting["oldest_age"] < 10
        redis_server.start()
        assert p.flush(10)
        sent = p.stats()
        assert (sent["spooled"], sent["bytes"], sent["oldest_age"], sent["sent"]) == (0, 0, None, 10)
        assert sent["last_error"] is None


def test_a_second_live_producer_on_a_directory_is_refused_with_spoollocked(env, tmp_path):
    p = producer(env, tmp_path / "spool")
    with pytest.raises(SpoolLocked, match="in use by another Producer"):
        producer(env, tmp_path / "spool")
    p.close(0.1)
    producer(env, tmp_path / "spool").close(0.1)


def test_a_forked_child_cannot_use_its_parents_producer_and_makes_its_own(env, redis_server, tmp_path):
    redis_server.start()
    p = producer(env, tmp_path / "parent")
    parent_id = p.emit(TAG, {"who": "parent"})
    done_r, done_w = os.pipe()
    exit_r, exit_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            try:
                p.emit(TAG, {"who": "child, wrongly"})
            except SpoolError as exc:
                assert "make a Producer of the child's own" in str(exc)
                own = producer(env, tmp_path / "child")
                with open(tmp_path / "child-id", "w") as f:
                    f.write(own.emit(TAG, {"who": "child"}))
                code = 0 if own.close(20) else 2
        finally:
            os.write(done_w, bytes([code]))
            os.read(exit_r, 1)  # stay alive until the parent has reopened its directory
            os._exit(code)
    try:
        assert os.read(done_r, 1) == b"\0"
        p.emit(TAG, {"who": "parent, after the fork"})  # the parent's Producer still works
        assert p.close(20)
        producer(env, tmp_path / "parent").close(1)  # the live child holds no copy of the lock
    finally:
        os.write(exit_w, b"x")
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    client = redis_server.client()
    assert client.exists(journal.event_key(parent_id), journal.event_key((tmp_path / "child-id").read_text())) == 2


def test_bus_spool_prints_what_waits_and_flush_sends_it(env, redis_server, tmp_path):
    spool = tmp_path / "spool"
    p = producer(env, spool)
    ids = p.emit_many(TAG, [{"n": n} for n in range(25)])
    p.close(0.1)
    shown = run_bus(None, "spool", str(spool), env=env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(f"{spool}: 25 events waiting, ")
    assert "oldest emitted " in shown.stdout
    down = run_bus(None, "spool", str(spool), "--flush", "--timeout", "1", env=env)
    assert down.returncode == 1
    assert down.stderr.startswith(f"bus spool: 25 of 25 events still wait in {spool}")
    assert len(down.stderr.strip().splitlines()) == 1
    redis_server.start()
    sent = run_bus(None, "spool", str(spool), "--flush", env=env)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == f"{spool}: sent 25 events; nothing waiting"
    assert run_bus(None, "spool", str(spool), env=env).stdout.strip() == f"{spool}: nothing waiting"
    journal_holds_each_once(redis_server.client(), ids)


def test_opening_a_spool_again_and_again_leaves_no_pile_of_empty_segment_files(env, redis_server, tmp_path):
    redis_server.start()
    spool = tmp_path / "spool"
    for n in range(5):
        p = producer(env, spool)
        if n == 2:
            ids = p.emit_many(TAG, [{"n": 1}, {"n": 2}])
        assert p.close(10)
    assert len(list(spool.glob("*.seg"))) == 1
    journal_holds_each_once(redis_server.client(), ids)
    p = producer(env, tmp_path / "other")
    p.close(0.1)  # Redis down now: what waits stays, in its segment
    redis_server.kill()
    p = producer(env, spool)
    later = p.emit(TAG, {"n": 3})
    p.close(0.1)
    for _ in range(3):
        producer(env, spool).close(0.1)
    assert inspect(spool).count == 1 and len(list(spool.glob("*.seg"))) == 2
    redis_server.start()
    assert producer(env, spool).close(10)
    journal_holds_each_once(redis_server.client(), ids + [later])


def test_with_two_shards_each_keeps_the_marks_of_its_routes_and_a_resend_after_archiving_journals_nothing(
        redis_server, tmp_path):
    (tmp_path / "b").mkdir()
    other = RedisServer(tmp_path / "b")
    redis_server.start()
    other.start()
    try:
        routes = tmp_path / "routes"
        routes.mkdir()
        (routes / "north.toml").write_text('match = "north.*"\nendpoint = "http://127.0.0.1:9/n"\n')
        (routes / "south.toml").write_text('match = "south.*"\nendpoint = "http://127.0.0.1:9/s"\nshard = "b"\n')
        env = bus_env(redis_server.url, routes, BUS_REDIS_SHARDS=f"b={other.url}", BUS_REDIS_TIMEOUT="1")
        spool = tmp_path / "spool"
        p = producer(env, spool)
        unsent = (spool / "cursor").read_bytes()
        north = [p.emit("north.x", {"n": n}) for n in range(30)]
        south = [p.emit("south.x", {"n": n}) for n in range(30)]
        assert p.close(10)
        name = (spool / "identity").read_text().split()[0]
        for server, route, ids in ((redis_server, "north", north), (other, "south", south)):
            client = server.client()
            assert set(client.hkeys(journal.spool_mark_key(name))) == {route.encode()}
            client.delete(*[journal.event_key(i) for i in ids])  # archived since, say
        (spool / "cursor").write_bytes(unsent)  # and the producer had died before its cursor moved
        p = producer(env, spool)
        assert p.stats()["spooled"] == 60
        assert p.close(10)
        for server, route in ((redis_server, "north"), (other, "south")):
            assert int(server.client().hget(journal.COUNTERS, f"accepted:{route}")) == 30
    finally:
        other.kill()


def test_an_ordered_routes_spooled_events_join_their_keys_lanes_and_only_heads_wait_for_a_task(env, redis_server,
                                                                                              tmp_path):
    # Sent as frames (journal.accept_frames), each event still reaches accept.lua's lanes with its body.
    routes = tmp_path / "routes"
    (routes / "ospool.toml").write_text('match = "ospool.*"\nendpoint = "http://127.0.0.1:9/x"\n'
                                        'ordered = true\norder_key = "account"\n')
    redis_server.start()
    p = producer(env, tmp_path / "spool")
    ids = p.emit_many("ospool.x", [{"account": "a", "n": 0}, {"account": "b", "n": 1}, {"account": "a", "n": 2}])
    ids.append(p.emit("ospool.x", {"account": "b", "n": 3}))
    assert p.close(10)
    client = redis_server.client()
    heads = {k.decode(): v.decode() for k, v in client.hgetall(keys.lanes_key("ospool")).items()}
    assert heads == {":a": ids[0], ":b": ids[1]}
    assert [i.decode() for i in client.zrange(keys.lane_key("ospool", ":a"), 0, -1)] == [ids[0], ids[2]]
    assert [i.decode() for i in client.zrange(keys.lane_key("ospool", ":b"), 0, -1)] == [ids[1], ids[3]]
    assert sorted(waiting_for_a_task(client, "ospool")) == sorted(ids[:2])


EMITTING_CHILD = """
import os, sys
import bus
p = bus.Producer(sys.argv[1])
out = int(sys.argv[2])
for n in range(10_000_000):  # until killed; each id is reported only once emit has returned it
    os.write(out, p.emit("%s", {"n": n, "pad": "x" * (n %% 300)}).encode() + b"\\n")
""" % TAG


def test_a_producer_killed_from_outside_in_the_middle_of_emitting_keeps_every_id_emit_returned(env, tmp_path):
    # SIGKILL at whatever moment, a copy into the mapped segment perhaps half done: the torn frame is cut
    # off on reopening, and every id emit returned is there once (Redis is down: nothing was sent).
    spool = tmp_path / "spool"
    read, write = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", EMITTING_CHILD, str(spool), str(write)], env=env, pass_fds=(write,),
                             stderr=subprocess.PIPE)
    os.close(write)
    reported = b""
    deadline = time.monotonic() + 30
    while reported.count(b"\n") < 20_000 and time.monotonic() < deadline:
        reported += os.read(read, 1 << 16)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    while chunk := os.read(read, 1 << 16):
        reported += chunk
    os.close(read)
    returned = reported.decode().split("\n")[:-1]  # a last line cut short was not reported whole
    assert len(returned) >= 20_000, child.stderr.read().decode()
    again = Spool(spool, fsync="no")
    found = []
    while (batch := again.read(5000)) is not None:
        found += [e.id for e in batch.events]
        again.ack(batch)
    again.close()
    assert len(set(found)) == len(found)
    assert set(returned) <= set(found)
    assert len(found) - len(returned) <= 1  # at most the one whose emit returned as the kill came
