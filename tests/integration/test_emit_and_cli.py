"""bus.emit() and the `bus` command line against a real Redis and worker."""
from __future__ import annotations

import time
import uuid

import pytest

from bus import InvalidTag, NoRoute, Unavailable, intake, settings
from conftest import bus_env, run_bus, wait_until


def test_emit_returns_the_id_and_the_event_is_delivered(bus):
    name = uuid.uuid4().hex[:8]
    bus_intake = intake.load(settings.load(bus.env))
    event_id = intake.accept(bus_intake, f"api.{name}", [{"via": "emit"}])[0]
    (got,) = wait_until(lambda: bus.receiver.to(f"/api/{name}/"), 15, what="emitted event")
    assert got.headers["X-Request-Id"] == event_id


def test_bus_emit_function_uses_the_environment(bus, monkeypatch):
    import bus as bus_pkg

    monkeypatch.setattr(intake, "_default", None)
    for key, value in bus.env.items():
        if key.startswith("BUS_"):
            monkeypatch.setenv(key, value)
    name = uuid.uuid4().hex[:8]
    event_id = bus_pkg.emit(f"api.{name}", {"a": 1})
    wait_until(lambda: bus.receiver.ids(f"/api/{name}/") == [event_id], 15, what="emitted event")
    with pytest.raises(NoRoute):
        bus_pkg.emit("nobody.here", {})
    with pytest.raises(InvalidTag):
        bus_pkg.emit("bad tag", {})
    monkeypatch.setattr(intake, "_default", None)


def test_emit_and_a_post_are_accepted_once_after_redis_forgot_the_accept_script(bus):
    """emit() and the ingress send the accept by its SHA, packed ahead (journal.accept_packed): a Redis that
    no longer knows the script (restarted, SCRIPT FLUSH) answers NOSCRIPT, and the accept loads it and
    goes through, each event journaled and delivered once."""
    name = uuid.uuid4().hex[:8]
    bus_intake = intake.load(settings.load(bus.env))
    intake.accept(bus_intake, f"api.{name}", [{"warm": 1}])  # the pipe is connected and the script known
    bus.redis.client().script_flush()
    emitted = intake.accept(bus_intake, f"api.{name}", [{"via": "emit"}])[0]
    bus.redis.client().script_flush()
    answer = bus.post(f"api.{name}", '{"via": "http"}')
    assert answer.status_code == 202, answer.text
    posted = answer.json()["ids"][0]
    wait_until(lambda: len(bus.receiver.to(f"/api/{name}/")) >= 3, 15, what="the three events")
    time.sleep(0.5)  # a second copy of any would have arrived by now
    ids = bus.receiver.ids(f"/api/{name}/")
    assert sorted(ids) == sorted(set(ids)) and {emitted, posted} <= set(ids) and len(ids) == 3


def test_emit_raises_unavailable_within_a_bounded_time_when_redis_is_down(bus):
    down = intake.load(settings.load(bus_env("redis://127.0.0.1:1/0", bus.routes_dir)))
    started = time.monotonic()
    with pytest.raises(Unavailable, match="nothing was accepted"):
        intake.accept(down, "api.x", [{}])
    assert time.monotonic() - started < 5


def test_cli_emit_prints_the_id_and_exits_0(bus):
    name = uuid.uuid4().hex[:8]
    done = run_bus(bus, "emit", f"api.{name}", '{"a": 1}')
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.strip()
    wait_until(lambda: bus.receiver.ids(f"/api/{name}/") == [event_id], 15, what="CLI event")


def test_cli_errors_exit_1_with_one_line_and_usage_errors_exit_2(bus):
    no_route = run_bus(bus, "emit", "nobody.here", "{}")
    assert no_route.returncode == 1
    assert no_route.stderr.strip().splitlines() == ["bus emit: no route matches tag 'nobody.here'; add a route whose match covers it"]
    bad_json = run_bus(bus, "emit", "api.x", "{nope")
    assert bad_json.returncode == 1 and "not valid JSON" in bad_json.stderr
    assert run_bus(bus, "emit", "api.x").returncode == 2
    assert run_bus(bus, "frobnicate").returncode == 2
    unknown_worker = run_bus(bus, "worker", "nosuch")
    assert unknown_worker.returncode == 1 and "no route named 'nosuch'" in unknown_worker.stderr


def test_bus_routes_prints_the_table_in_match_order_and_the_url_for_a_tag(bus):
    table = run_bus(bus, "routes")
    assert table.returncode == 0
    names = [line.split()[1] for line in table.stdout.splitlines()[1:]]
    assert names == ["api", "capped", "limited", "ops", "parked", "secret", "signed"]
    one = run_bus(bus, "routes", "api.orders")
    assert one.returncode == 0
    assert one.stdout.splitlines()[1] == f"POST {bus.receiver.url}/api/orders/"
    assert "route api" in one.stdout
    assert run_bus(bus, "routes", "nobody.here").returncode == 1


def test_a_broken_route_file_stops_start_up_naming_file_and_key(bus, tmp_path):
    (tmp_path / "api.toml").write_text('match = "api.*"\nendpoint = "http://x/${tag[1]}/"\nopen_timeout = "soon"\n')
    env = bus_env(bus.env["BUS_REDIS_URL"], tmp_path)
    for command in (["serve", "--bind", "127.0.0.1:1"], ["worker"], ["routes"]):
        done = run_bus(bus, *command, env=env)
        assert done.returncode == 1, command
        assert f"{tmp_path / 'api.toml'}: key 'open_timeout'" in done.stderr
