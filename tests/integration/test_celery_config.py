"""Where the Celery settings come from: BUS_CELERY_CONFIG or ./celeryconfig.py, never a file another user could write."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bus import journal
from bus.worker import recovery
from conftest import bus_env, free_port, parked_tag, run_bus, wait_until, waiting_for_a_task

SETTINGS = "from bus.celery_defaults import *  # noqa\nimport pathlib\npathlib.Path({mark!r}).write_text('loaded')\n"
SHOW = "from bus.celery import app; print(app.conf.task_acks_late)"


def _python(code: str, cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_the_working_directorys_celeryconfig_is_loaded_when_only_its_owner_can_write_it(bus, tmp_path):
    mark = tmp_path / "mark"
    config = tmp_path / "celeryconfig.py"
    config.write_text(SETTINGS.format(mark=str(mark)))
    config.chmod(0o644)
    done = _python(SHOW, tmp_path, bus.env)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert mark.read_text() == "loaded"


def test_a_celeryconfig_others_may_write_is_refused_before_it_runs(bus, tmp_path):
    mark = tmp_path / "mark"
    config = tmp_path / "celeryconfig.py"
    config.write_text(SETTINGS.format(mark=str(mark)))
    os.chmod(config, 0o666)
    done = subprocess.run([sys.executable, "-m", "bus", "worker", "api"], cwd=tmp_path, env=bus.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "refusing to load Celery settings" in done.stderr and "chmod o-w" in done.stderr
    assert "Traceback" not in done.stderr
    assert not mark.exists(), "the file ran before it was refused"


@pytest.mark.parametrize("text, said", [
    ("broker_connection_retry = True\nworker_concurrency = (\n", "SyntaxError: '(' was never closed (line 2)"),
    ("x = 1\nimport no_such_module_here\n", "ModuleNotFoundError: No module named 'no_such_module_here' (line 2)"),
    ("def f():\n    return undefined_name\n\nworker_concurrency = f()\n", "NameError: name 'undefined_name' is not defined (line 2)"),
], ids=["syntax", "import", "name"])
def test_a_celeryconfig_that_fails_to_run_is_one_line_naming_the_file_the_line_and_the_error(bus, tmp_path, text, said):
    config = tmp_path / "celeryconfig.py"
    config.write_text(text)
    config.chmod(0o600)
    done = subprocess.run([sys.executable, "-m", "bus", "worker", "api"], cwd=tmp_path, env=bus.env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert f"{config.resolve()}: the Celery settings file failed to run: {said}" in done.stderr, done.stderr


def test_bus_celery_config_names_the_file_and_a_missing_one_is_an_error(bus, tmp_path):
    mark = tmp_path / "mark"
    config = tmp_path / "elsewhere.py"
    config.write_text(SETTINGS.format(mark=str(mark)))
    config.chmod(0o600)
    env = bus_env(bus.redis.url, bus.routes_dir, BUS_CELERY_CONFIG=str(config))
    assert _python(SHOW, "/", env).returncode == 0 and mark.exists()
    missing = bus_env(bus.redis.url, bus.routes_dir, BUS_CELERY_CONFIG=str(tmp_path / "nope.py"))
    done = subprocess.run([sys.executable, "-m", "bus", "worker", "api"], cwd=tmp_path, env=missing,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "BUS_CELERY_CONFIG" in done.stderr and "no such file" in done.stderr


def _refused(args: list[str], cwd, env) -> subprocess.CompletedProcess:
    """Run ARGS, which must stop on their own (a worker or ingress that starts would run until the timeout)."""
    try:
        return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{' '.join(args)} started instead of refusing:\n{exc.stderr}") from None


def test_plain_celery_worker_without_queues_refuses_naming_the_route_queues_and_bus_worker(bus, tmp_path):
    done = _refused([sys.executable, "-m", "celery", "-A", "bus", "worker", "--concurrency", "1"], tmp_path, bus.env)
    assert done.returncode == 1, done.stderr
    assert "-Q bus.api,bus.capped," in done.stderr and "`bus worker [ROUTE...]`" in done.stderr
    assert "consumes only celery" in done.stderr


def test_a_celery_broker_url_other_than_bus_redis_url_stops_the_worker_and_the_ingress(bus, tmp_path):
    elsewhere = f"redis://127.0.0.1:{free_port()}/0"
    env = {**bus.env, "CELERY_BROKER_URL": elsewhere}
    for args in ([sys.executable, "-m", "bus", "worker", "api"],
                 [sys.executable, "-m", "celery", "-A", "bus", "worker", "-Q", "bus.api"],
                 [sys.executable, "-m", "bus", "serve", "--bind", f"127.0.0.1:{free_port()}", "--forward", "off"]):
        done = _refused(args, tmp_path, env)
        assert done.returncode == 1, done.stderr
        assert f"broker_url is {elsewhere}" in done.stderr and f"BUS_REDIS_URL is {bus.redis.url}" in done.stderr


def test_a_celeryconfig_broker_url_other_than_bus_redis_url_stops_the_worker(bus, tmp_path):
    elsewhere = f"redis://127.0.0.1:{free_port()}/3"
    config = tmp_path / "celeryconfig.py"
    config.write_text(f"from bus.celery_defaults import *  # noqa\nbroker_url = {elsewhere!r}\n")
    config.chmod(0o644)
    done = _refused([sys.executable, "-m", "bus", "worker", "api"], tmp_path, bus.env)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"broker_url is {elsewhere}" in done.stderr and f"BUS_REDIS_URL is {bus.redis.url}" in done.stderr


def test_celery_purge_of_a_bus_queue_refuses_and_names_bus_purge_which_sticks(bus, tmp_path):
    tag = parked_tag()
    (event_id,) = bus.post(tag, '{"to": "purge"}').json()["ids"]
    client = bus.redis.client()
    wait_until(lambda: event_id in waiting_for_a_task(client, "parked"), 10, what="the event to wait in bus.parked")
    done = _refused([sys.executable, "-m", "celery", "-A", "bus", "purge", "-f", "-Q", "bus.parked"], tmp_path, bus.env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bus.parked is a bus queue; nothing was purged" in done.stderr
    assert "`bus purge --route parked --status queued --status retrying --yes`" in done.stderr
    assert event_id in waiting_for_a_task(client, "parked"), "celery purge left the queue alone"

    purged = run_bus(bus, "purge", "--route", "parked", "--status", "queued", "--tag", tag, "--yes")
    assert purged.returncode == 0 and "purged 1 events" in purged.stdout, purged.stderr
    assert journal.load(client, event_id) is None
    assert event_id not in recovery.missing_tasks(client), "recovery has nothing to requeue: the purge sticks"
