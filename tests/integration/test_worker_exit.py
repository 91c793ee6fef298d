"""`bus worker`'s exit status: 1 with one line saying why when its Celery worker did not start (Celery
itself ended it with 0, so `bus up`, systemd or an orchestrator took a worker that never ran for a
clean stop), 0 for a stop asked for with SIGTERM or SIGINT. Real `bus worker` processes, on
redis-servers of the test's own."""
from __future__ import annotations

import signal
import subprocess

import pytest

from conftest import BusProcess, bus_env, start_worker, wait_until

ROUTE = 'match = "job.*"\nendpoint = "http://127.0.0.1:9/job/${tag[1]}"\n'


def env_for(tmp_path, redis_url: str) -> dict[str, str]:
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "job.toml").write_text(ROUTE)
    return bus_env(redis_url, routes)


def exit_status(proc: BusProcess, timeout: float) -> int:
    assert proc.proc is not None
    try:
        return proc.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bus worker still running after {timeout} s:\n{proc.output()[-3000:]}") from None
    finally:
        proc.stop()  # closes its log; stops it if it is still running


def test_a_worker_that_cannot_start_exits_1_with_one_line_saying_why(redis_server, tmp_path):
    """A read-only replica as BUS_REDIS_URL: kombu's first write at connect fails, an 'Unrecoverable error'."""
    primary = redis_server("primary")
    replica = redis_server("replica", "--replicaof", "127.0.0.1", str(primary.port))
    proc = BusProcess(["worker", "--concurrency", "1"], env_for(tmp_path, replica.url), tmp_path / "worker.log").start()
    assert exit_status(proc, 60) == 1
    last = proc.output().strip().splitlines()[-1]
    assert last == ("bus worker: the worker did not start: ReadOnlyError: You can't write against a read only "
                    "replica. (Celery's exit status 1); its log above says why")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_stopped_with_sigterm_or_sigint_exits_0(redis_server, tmp_path, sig):
    """SIGINT too, which Celery itself ends with 1 (its EX_FAILURE for a Ctrl-C)."""
    server = redis_server("redis")
    proc = start_worker(env_for(tmp_path, server.url), tmp_path / "worker.log")
    proc.signal(sig)
    assert exit_status(proc, 30) == 0
    assert "bus worker:" not in proc.output()


def test_a_worker_stopped_while_it_waits_for_a_redis_that_refuses_exits_0(redis_server, tmp_path):
    """Redis down at start is waited for (broker_connection_retry_on_startup), not a failure: SIGTERM then is a clean stop."""
    server = redis_server("redis")
    server.stop()  # its port refuses connections now
    proc = BusProcess(["worker", "--concurrency", "1"], env_for(tmp_path, server.url), tmp_path / "worker.log").start()
    wait_until(lambda: "Cannot connect to redis" in proc.output(), 30, what="the worker to retry its Redis")
    proc.signal(signal.SIGTERM)
    assert exit_status(proc, 30) == 0
    assert "bus worker:" not in proc.output()
