"""Every bad input gets a clear error naming what is wrong, and nothing of a refused request is enqueued."""
from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

from conftest import bus_env, start_ingress


@pytest.mark.parametrize("tag, says", [
    ("parked..x", "no empty part"),
    ("parked.x%20y", "invalid"),
    ("parked.%C3%BC", "invalid"),
    ("parked." + "x" * 250, "limit is 255"),
    ("parked.x/y", "invalid"),
])
def test_bad_tag_is_refused_with_400_naming_the_problem(bus, parked_len, tag, says):
    resp = bus.post(tag, "{}")
    assert resp.status_code == 400
    assert says in resp.json()["error"]
    assert parked_len() == 0


@pytest.mark.parametrize("body, content_type, says", [
    ('{"a": ', "application/json", "line 1, column 7"),
    ('{"a": 1}\n{"b": }\n', "application/x-ndjson", "NDJSON line 2"),
    ('[{"a": 1}, 2]', "application/json", "item 1 is a JSON number"),
    ('[{"a": 1}, [1]]', "application/json", "item 1 is a JSON array"),
    ('"text"', "application/json", "the body is a JSON string"),
    ("[]", "application/json", "no events"),
    ("", "application/json", "empty"),
    ("  \n", "application/json", "empty"),
])
def test_bad_body_is_refused_with_400_saying_where_and_nothing_is_enqueued(bus, parked_len, body, content_type, says):
    resp = bus.post("parked.x", body, content_type=content_type)
    assert resp.status_code == 400, resp.text
    assert says in resp.json()["error"]
    assert parked_len() == 0


def test_unknown_tag_is_refused_with_404(bus):
    resp = bus.post("nobody.listens", "{}")
    assert resp.status_code == 404
    assert resp.json() == {"error": "no route matches tag 'nobody.listens'; add a route whose match covers it"}


def test_tag_the_route_cannot_build_a_url_for_is_refused(bus):
    # `parked.*` matches one part after 'parked'; `api.*` needs tag[1].
    resp = bus.post("api", "{}")
    assert resp.status_code == 404


def test_body_over_the_limit_is_refused_with_413(bus, parked_len):
    big = json.dumps({"x": "y" * (65 * 1024)})
    resp = bus.post("parked.x", big)
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]
    # Chunked upload with no Content-Length is measured as it is read.
    chunked = requests.post(f"{bus.url}/parked.x", data=iter([big[:40000].encode(), big[40000:].encode()]),
                            headers={"Content-Type": "application/json"}, timeout=10)
    assert chunked.status_code == 413
    assert parked_len() == 0


def test_healthz_answers_ok_and_wrong_method_gets_json_405(bus):
    assert requests.get(f"{bus.url}/healthz", timeout=5).json() == {"status": "ok"}
    resp = requests.get(f"{bus.url}/api.x", timeout=5)
    assert resp.status_code == 405 and "POST" in resp.json()["error"]


def _blackhole() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections and never answers: a hung Redis."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    threading.Thread(target=lambda: [held.append(server.accept()[0]) for _ in range(64)], daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_redis_unreachable_gets_503_with_retry_after_within_seconds(bus, tmp_path, kind):
    if kind == "refused":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    else:
        hole, port = _blackhole()
    env = bus_env(f"redis://127.0.0.1:{port}/0", bus.routes_dir)
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    try:
        started = time.monotonic()
        resp = requests.post(f"{url}/api.x", data="{}", timeout=30)
        elapsed = time.monotonic() - started
        assert resp.status_code == 503
        assert resp.headers["Retry-After"].isdigit()
        assert "nothing was accepted" in resp.json()["error"]
        assert elapsed < 5, f"answered after {elapsed:.1f}s"
        assert requests.get(f"{url}/healthz", timeout=30).status_code == 503
    finally:
        ingress.stop()
        if kind == "hung":
            hole.close()
