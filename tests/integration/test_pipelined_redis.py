"""The shared Redis connections of the accept path: every caller gets its own reply, failures fail fast,
a connection heals itself.

Against a real redis-server of its own (AOF on), a port nobody listens on, and a
socket that accepts and never answers.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import threading
import time

import hiredis
import pytest
import redis

from bus.wire.pipelined import PipelinedRedis, SharedPipe, reply_error
from conftest import RedisServer, free_port


@pytest.fixture
def server(own_redis):
    return own_redis


def test_concurrent_callers_each_get_their_own_reply_in_one_connection(server):
    async def main() -> tuple[list, list, int]:
        conn = PipelinedRedis(server.url, 5)
        await asyncio.gather(*(conn.execute("SET", f"k{i}", i) for i in range(300)))
        got = await asyncio.gather(*(conn.execute("GET", f"k{i}") for i in range(300)))
        errors = await asyncio.gather(conn.execute("INCR", "k1"), conn.execute("HGET", "k2", "x"),
                                      conn.execute("INCR", "k3"), return_exceptions=True)
        ids = await asyncio.gather(*(conn.execute("CLIENT", "ID") for _ in range(50)))
        conn.close()
        return got, errors, len(set(ids))

    got, errors, connections = asyncio.run(main())
    assert got == [str(i).encode() for i in range(300)]
    # A command Redis refuses fails alone; the commands around it keep their own replies.
    assert errors[0] == 2 and errors[2] == 4
    assert isinstance(errors[1], redis.ResponseError) and "WRONGTYPE" in str(errors[1])
    assert connections == 1


def test_scripts_run_on_a_server_that_never_saw_them_and_after_a_script_flush(server):
    source = "return redis.call('INCRBY', KEYS[1], ARGV[1])"

    async def main() -> list:
        conn = PipelinedRedis(server.url, 5)
        first = await conn.run_script(source, ["n"], [5])
        await conn.execute("SCRIPT", "FLUSH")
        second = await asyncio.gather(*(conn.run_script(source, ["n"], [1]) for _ in range(3)))
        conn.close()
        return [first, *second]

    assert asyncio.run(main()) == [5, 6, 7, 8]


def test_a_restarted_redis_fails_what_was_in_flight_and_is_reconnected_on_the_next_command(server):
    async def main() -> tuple:
        conn = PipelinedRedis(server.url, 2)
        before = await conn.execute("SET", "kept", "yes")
        server.kill()
        with pytest.raises(redis.ConnectionError):
            await conn.execute("GET", "kept")
        server.start()  # the same port; AOF brings the key back
        after = await conn.execute("GET", "kept")
        conn.close()
        return before, after

    assert asyncio.run(main()) == (b"OK", b"yes")


def test_nothing_listening_is_a_connection_error_at_once():
    async def main() -> None:
        await PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0", 5).execute("PING")

    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        asyncio.run(main())
    assert time.monotonic() - started < 2


def test_a_redis_that_never_answers_is_a_timeout_error_after_the_timeout_for_every_caller():
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        async def main() -> list:
            conn = PipelinedRedis(f"redis://127.0.0.1:{hole.getsockname()[1]}/0", 1.0)
            return await asyncio.gather(*(conn.execute("PING") for _ in range(5)), return_exceptions=True)

        started = time.monotonic()
        results = asyncio.run(main())
        elapsed = time.monotonic() - started
    finally:
        hole.close()
    assert all(isinstance(r, redis.TimeoutError) for r in results), results
    assert 0.9 <= elapsed < 3, elapsed


def test_a_password_and_a_database_number_in_the_url_are_used(tmp_path):
    s = RedisServer(tmp_path)
    s.start()
    try:
        s.client().config_set("requirepass", "sekret")
        url = f"redis://:sekret@127.0.0.1:{s.port}/3"

        async def main() -> bytes:
            conn = PipelinedRedis(url, 5)
            await conn.execute("SET", "where", "db3")
            conn.close()
            return await PipelinedRedis(f"redis://:wrong@127.0.0.1:{s.port}/0", 5).execute("PING")

        with pytest.raises(redis.AuthenticationError):  # as redis-py: a ConnectionError, so Redis counts as down
            asyncio.run(main())
        assert redis.Redis(port=s.port, password="sekret", db=3).get("where") == b"db3"
    finally:
        s.stop()


# --- SharedPipe: the same for threads (bus.emit(), the forward listener)


def test_threads_sharing_the_pipe_each_get_their_own_reply_over_one_connection(server):
    pipe = SharedPipe(server.url, 5)
    barrier = threading.Barrier(8)

    def work(t: int) -> list[bytes]:
        barrier.wait()
        for i in range(200):
            pipe.execute("SET", f"t{t}:{i}", f"{t}-{i}")
        return [pipe.execute("GET", f"t{t}:{i}") for i in range(200)]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        got = list(pool.map(work, range(8)))
    assert got == [[f"{t}-{i}".encode() for i in range(200)] for t in range(8)]
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipe.execute("HGET", "t0:0", "x")
    assert pipe.execute("GET", "t0:1") == b"0-1", "a refused command leaves the connection in step"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert len(set(pool.map(lambda _: pipe.execute("CLIENT", "ID"), range(64)))) == 1, "one connection"
    pipe.close()


def test_several_commands_go_in_one_write_and_a_refused_one_gives_its_error_in_place(server):
    pipe = SharedPipe(server.url, 5)
    pipe.execute("SET", "str", "v")
    replies = pipe.execute_many([("HSET", "h", "a", "1"), ("HGET", "str", "x"), ("HGETALL", "h"), ("GET", "none")])
    assert replies[0] == 1 and replies[2] == [b"a", b"1"] and replies[3] is None
    assert isinstance(replies[1], redis.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert pipe.execute("GET", "str") == b"v", "the connection is still in step"
    barrier = threading.Barrier(4)

    def work(t: int) -> list:  # a multi-command slot among other threads' single commands
        barrier.wait()
        return [pipe.execute_many([("INCR", f"n{t}"), ("GET", f"n{t}")]) for _ in range(50)]

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        got = list(pool.map(work, range(4)))
    assert all(runs == [[i, str(i).encode()] for i in range(1, 51)] for runs in got)
    pipe.close()


def test_the_pipe_fails_fast_while_redis_is_down_and_reconnects_after(server):
    pipe = SharedPipe(server.url, 2)
    assert pipe.run_script("return redis.call('SET', KEYS[1], ARGV[1])", ["kept"], ["yes"]) == b"OK"
    server.kill()
    with pytest.raises(redis.ConnectionError):
        pipe.execute("GET", "kept")
    with pytest.raises(redis.ConnectionError):
        pipe.execute("GET", "kept")
    server.start()
    assert pipe.execute("GET", "kept") == b"yes"
    # The restarted server has no scripts: EVALSHA's NOSCRIPT falls back to EVAL.
    assert pipe.run_script("return redis.call('GET', KEYS[1])", ["kept"], []) == b"yes"


def test_the_pipe_times_out_on_a_redis_that_never_answers():
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(8)
    try:
        pipe = SharedPipe(f"redis://127.0.0.1:{hole.getsockname()[1]}/0", 1.0)
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            pipe.execute("PING")
        assert 0.9 <= time.monotonic() - started < 3
    finally:
        hole.close()
    with pytest.raises(redis.ConnectionError):
        SharedPipe(f"redis://127.0.0.1:{free_port()}/0", 5).execute("PING")
    SharedPipe(f"redis://127.0.0.1:{free_port()}/0", 5)  # constructing one never connects, so never fails


def test_a_forked_child_uses_a_connection_of_its_own(server):
    pipe = SharedPipe(server.url, 5)
    assert pipe.execute("SET", "who", "parent") == b"OK"
    pid = os.fork()
    if pid == 0:  # the child: exit status tells the parent what it saw
        try:
            ok = pipe.execute("SET", "child", "yes") == b"OK" and pipe.execute("GET", "who") == b"parent"
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert pipe.execute("GET", "child") == b"yes", "the parent's connection is still in step"


def test_a_connection_redis_closed_while_idle_is_replaced_before_the_next_command(server):
    """A worker's pipe sits idle while Redis restarts: its next command must reach the new Redis, not fail
    on the dead socket (a failed attempt record after a successful POST would send the event again)."""
    pipe = SharedPipe(server.url, 2)
    assert pipe.execute("SET", "k", "v") == b"OK"
    server.kill()
    server.start()
    assert pipe.execute("GET", "k") == b"v"
    assert pipe.run_script("return redis.call('GET', KEYS[1])", ["k"], []) == b"v"


def test_error_replies_become_redis_py_s_exception_types():
    assert isinstance(reply_error(hiredis.ReplyError("LOADING Redis is loading the dataset in memory")),
                      redis.BusyLoadingError)
    assert isinstance(reply_error(hiredis.ReplyError("LOADING x")), redis.ConnectionError), "so: Redis is down"
    assert isinstance(reply_error(hiredis.ReplyError("NOSCRIPT No matching script")), redis.exceptions.NoScriptError)
    wrong = reply_error(hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value"))
    assert type(wrong) is redis.ResponseError and "WRONGTYPE" in str(wrong)


def test_threads_sharing_a_pipe_whose_redis_dies_each_get_their_own_reply_or_an_error_and_none_hangs(server):
    pipe = SharedPipe(server.url, 2)
    until = time.monotonic() + 3

    def work(t: int) -> dict[str, int]:
        seen = {"ok": 0, "down": 0}
        for i in range(20_000):
            if time.monotonic() > until:
                break
            try:
                assert pipe.execute("ECHO", f"{t}:{i}") == f"{t}:{i}".encode()
                seen["ok"] += 1
            except redis.ConnectionError:
                seen["down"] += 1
        return seen

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(work, t) for t in range(16)]
        time.sleep(1)
        server.kill()
        results = [f.result(timeout=30) for f in futures]
    assert all(r["ok"] > 0 for r in results), results
    assert sum(r["down"] for r in results) > 0, results
    server.start()
    assert pipe.execute("PING") == b"PONG"
