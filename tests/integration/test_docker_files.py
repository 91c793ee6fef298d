"""docker-compose.yml and the Dockerfile: the ingress and workers have healthchecks that really tell, and the
image does not run the bus as root. The healthcheck commands are taken from the file and run against a real bus."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

from conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def healthcheck(service: str) -> list[str]:
    """The `test:` of a service's healthcheck in docker-compose.yml (written as a JSON array there)."""
    text = (ROOT / "docker-compose.yml").read_text()
    block = re.search(rf"^  {re.escape(service)}:\n((?:    .*\n|\n)*)", text, re.M)
    assert block, f"no service {service} in docker-compose.yml"
    test = re.search(r"^    healthcheck:\n      test: (\[.*\])$", block.group(1), re.M)
    assert test, f"service {service} has no healthcheck"
    return json.loads(test.group(1))


def test_the_ingress_healthcheck_passes_on_a_running_ingress_and_fails_without_one(bus):
    kind, program, flag, code = healthcheck("ingress")
    assert (kind, program, flag) == ("CMD", "python", "-c") and "/healthz" in code

    def check(url: str) -> int:
        return subprocess.run([sys.executable, "-c", code.replace("http://127.0.0.1:8080", url)],
                              capture_output=True, timeout=30).returncode

    assert check(bus.url) == 0
    assert check(f"http://127.0.0.1:{free_port()}") != 0


def test_the_worker_healthcheck_pings_the_worker_by_its_name(bus):
    kind, command = healthcheck("worker-api")
    assert kind == "CMD-SHELL" and "api@$$HOSTNAME" in command

    def check(name: str) -> int:
        shell = command.replace("celery ", f"{sys.executable} -m celery ", 1).replace("api@$$HOSTNAME", name)
        return subprocess.run(["sh", "-c", shell], env=bus.env, capture_output=True, timeout=60).returncode

    # The session worker serves several routes: `bus worker api` alone would be api@<hostname>.
    assert check(f"api+limited+signed+ops@{socket.gethostname()}") == 0
    assert check(f"nosuch@{socket.gethostname()}") != 0


def test_the_image_runs_the_bus_as_a_user_of_its_own():
    lines = [line.split() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip()]
    users = [words[1] for words in lines if words[0] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the last USER of the image is not root"
    steps = [words[0] for words in lines]
    assert steps.index("USER") > max(i for i, w in enumerate(lines) if w[0] == "RUN"), "USER after every RUN"
