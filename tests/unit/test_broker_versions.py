"""broker/versions.py: loading the Celery app refuses a kombu or Celery that its patches were not written for."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from kombu.transport import redis as kombu_redis

from bus.broker import versions
from bus.errors import ConfigError, UnsupportedKombu

INSTALLED = versions.installed()


def resolving(**fakes: type):
    """versions._class, except for the classes named (by their last part) in fakes."""
    return lambda path: fakes.get(path.rpartition(".")[2]) or versions._class(path)


def refusal(versions_given=None, **fakes: type) -> str:
    with pytest.raises(UnsupportedKombu) as caught:
        versions.check(versions_given or INSTALLED, resolving(**fakes))
    return str(caught.value)


def test_the_installed_kombu_and_celery_are_the_ones_the_glue_was_written_against():
    versions.check()
    assert versions.problems(INSTALLED) == []


@pytest.mark.parametrize("name,version", [("kombu", "6.0.0"), ("kombu", "5.6.3"), ("celery", "6.1.0b1")])
def test_a_version_outside_the_supported_range_is_refused_naming_it_and_what_to_install(name, version):
    message = refusal({**INSTALLED, name: version})
    assert f"{name} {version} is not a version the bus was written against" in message
    assert "pip install 'kombu>=5.7,<6' 'celery>=5.7,<6'" in message
    assert issubclass(UnsupportedKombu, ConfigError), "the CLI prints it as a configuration error, exit 1"


def test_a_patched_method_whose_parameters_changed_is_refused_naming_both_signatures():
    class QoS(kombu_redis.QoS):
        def append(self, message, delivery_tag, priority=0):  # type: ignore[override]
            pass

    message = refusal(QoS=QoS)
    assert (f"kombu {INSTALLED['kombu']}'s kombu.transport.redis.QoS.append takes (self, message, delivery_tag, "
            "priority), where the bus's patch of it takes (self, message, delivery_tag)") in message


def test_a_patched_method_that_is_gone_is_refused_naming_it():
    class Channel:
        unacked_key, unacked_index_key = "unacked", "unacked_index"

        def queue_purge(self, queue, **kwargs):
            pass

    message = refusal(Channel=Channel)
    assert "has no kombu.transport.redis.Channel._connparams, which the bus patches" in message
    assert "has no kombu.transport.redis.Channel._create_client" in message and "queue_purge" not in message


def test_an_unacked_hash_under_another_name_is_refused():
    class Channel(kombu_redis.Channel):
        unacked_key = "kombu_unacked"

    assert "unacked tasks under unacked_key='kombu_unacked', where the bus reads 'unacked'" in refusal(Channel=Channel)


def test_the_range_is_the_one_pyproject_pins():
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    pins = {name: dep.replace("[redis]", "") for name in ("kombu", "celery") for dep in project["dependencies"]
            if dep.split("[")[0].split(">=")[0] == name}
    assert pins == {"kombu": versions._range("kombu"), "celery": versions._range("celery")}


def test_loading_the_celery_app_with_an_unknown_kombu_fails_with_the_message(tmp_path):
    # A new process: the check runs where `celery -A bus` and `bus worker` load the app. No Redis is contacted.
    env = {**os.environ, "BUS_REDIS_URL": "redis://127.0.0.1:1/0"}
    env.pop("BUS_CELERY_CONFIG", None)
    code = "import kombu\nkombu.__version__ = '6.2.0'\nimport bus.celery\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("bus: kombu 6.2.0 is not a version the bus was written against (kombu>=5.7,<6)")
