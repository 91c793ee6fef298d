"""celery_config.broker_urls() finds the broker URLs Celery's own app would use, without importing Celery:
`bus serve` checks its broker with it (celery_checks.check_broker) and never loads Celery."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

BOTH = """
import orjson
from bus import celery_config
ours = celery_config.broker_urls()
from bus.celery import app
print(orjson.dumps([[ours.broker_url, ours.broker_read_url, ours.broker_write_url],
                    [app.conf.broker_url, app.conf.broker_read_url, app.conf.broker_write_url]]).decode())
"""
CASES = {
    "the bundled defaults": ("", {}),
    "CELERY_BROKER_URL": ("", {"CELERY_BROKER_URL": "redis://127.0.0.1:7/3"}),
    "CELERY_BROKER_WRITE_URL": ("", {"CELERY_BROKER_WRITE_URL": "redis://127.0.0.1:8/0"}),
    "celeryconfig.py broker_url": ("broker_url = 'redis://127.0.0.1:9/1'\n", {}),
    "celeryconfig.py broker_read_url": ("broker_read_url = 'redis://127.0.0.1:10/0'\n", {}),
    "an old upper-case name beside the default": ("BROKER_URL = 'redis://127.0.0.1:11/0'\n", {}),
}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "BUS_"))}
    return {**env, "BUS_REDIS_URL": "redis://127.0.0.1:6/0", **extra}


@pytest.mark.parametrize("case", list(CASES))
def test_the_broker_urls_are_the_ones_the_celery_app_uses(case: str, tmp_path: Path) -> None:
    config, env = CASES[case]
    if config:
        (tmp_path / "celeryconfig.py").write_text(f"from bus.celery_defaults import *  # noqa\n{config}")
    done = subprocess.run([sys.executable, "-c", BOTH], cwd=tmp_path, env=_env(**env), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    ours, celerys = orjson.loads(done.stdout)
    assert ours == celerys


def test_the_ingress_checks_its_broker_without_loading_celery(tmp_path: Path) -> None:
    code = """
import sys
from bus import celery_config, cli, intake, settings
from bus.broker import celery_checks
from bus.ingress import server
config = settings.load()
celery_checks.check_broker(celery_config.broker_urls(), config.worker_redis.url, config.worker_shard)
print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'billiard')))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
