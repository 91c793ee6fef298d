"""`bus proxy` end to end: a real upstream (a threaded HTTP server), a real Redis, `bus proxy` and a
`bus worker` for replays, all on 127.0.0.1. The module has its own Redis: one test kills it."""
from __future__ import annotations

import hashlib
import http.server
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
import requests
from requests.structures import CaseInsensitiveDict

from bus import journal
from bus.route_secrets import signing_key
from bus.signing import headers as signed_headers
from conftest import ROUTE_SECRETS, BusProcess, RedisServer, bus_env, free_port, run_bus, start_worker, wait_until

pytestmark = pytest.mark.integration


@dataclass
class Seen:
    method: str
    path: str
    headers: CaseInsensitiveDict  # names as sent; HTTP compares them case-insensitively
    body: bytes


@dataclass
class Upstream:
    """The API behind the proxy: records every request of any method; answers per path prefix."""

    port: int = field(default_factory=free_port)
    seen: list[Seen] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)  # path prefix -> status to answer
    _server: http.server.ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _connections: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Upstream:
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with upstream._lock:
                    upstream._connections.add(self.connection)

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with upstream._lock:
                    upstream.seen.append(Seen(self.command, self.path, CaseInsensitiveDict(self.headers), body))
                if self.path.startswith("/chunked"):
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.send_header("Content-Type", "text/plain")
                    self.end_headers()
                    for i in range(50):
                        piece = (b"%04d" % i) * 1000
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if self.path.startswith("/slow"):
                    time.sleep(3)  # past the route's read_timeout
                if self.path.startswith("/stall"):
                    time.sleep(1)  # long enough to kill the proxy meanwhile
                status = next((s for p, s in upstream.statuses.items() if self.path.startswith(p)), 201)
                answer = hashlib.sha256(body).hexdigest().encode() if self.path.startswith("/upload") else \
                    b"answer to " + self.command.encode() + b" " + self.path.encode()
                self.send_response(status)
                self.send_header("X-Upstream", "yes")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(answer)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = handle_one

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down as a dead process is: the kept-alive connections close too."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            for connection in self._connections:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._connections.clear()

    def at(self, path_prefix: str) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.path.startswith(path_prefix)]


@dataclass
class Proxied:
    redis: RedisServer
    upstream: Upstream
    staging: Upstream
    env: dict[str, str]
    url: str
    proxy: BusProcess
    worker: BusProcess
    tmp: Path


def start_proxy(env: dict[str, str], log, upstream: str, *flags: str, tag: str = "proxied.api"
                ) -> tuple[BusProcess, str]:
    port = free_port()
    proc = BusProcess(["proxy", "--bind", f"127.0.0.1:{port}", "--upstream", upstream, "--tag", tag, *flags],
                      env, log).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.proc.poll() is not None:
            raise AssertionError(f"bus proxy exited:\n{proc.output()}")
        try:
            requests.get(f"{url}/ready", timeout=5)
            return True
        except requests.ConnectionError:
            return False

    wait_until(up, 20, what="bus proxy to answer")
    return proc, url


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    tmp = tmp_path_factory.mktemp("proxy")
    server = RedisServer(tmp_path_factory.mktemp("proxy-redis"))
    server.start()
    upstream, staging = Upstream().start(), Upstream().start()
    routes = tmp / "routes"
    routes.mkdir()
    # The route's endpoint is the upstream: where `bus replay` sends captured requests.
    (routes / "proxied.toml").write_text(f'match = "proxied.*"\nendpoint = "{upstream.url}"\n'
                                         "open_timeout = 1\nread_timeout = 2\nretry_max_interval = 1\n")
    (routes / "signedcap.toml").write_text(f'match = "signedcap.*"\nendpoint = "{upstream.url}"\n'
                                           'signing_secret = "env:BUS_TEST_SIGNING_NEW"\n')
    env = bus_env(server.url, routes, BUS_MAX_BODY=str(24 * 1024 * 1024))
    proxy, url = start_proxy(env, tmp / "proxy.log", upstream.url, "--retryable", "503")
    worker = start_worker(env, tmp / "worker.log", "proxied", "signedcap")
    try:
        proxied = Proxied(server, upstream, staging, env, url, proxy, worker, tmp)
        yield proxied
    finally:
        proxy.stop()
        proxied.worker.stop()
        upstream.stop()
        staging.stop()
        server.stop()


def unique() -> str:
    return uuid.uuid4().hex[:10]


def event(proxied: Proxied, event_id: str) -> dict:
    return journal.show(proxied.redis.client(), event_id)


def settled(proxied: Proxied, event_id: str, status: str) -> dict:
    return wait_until(lambda: (lambda e: e if e["status"] == status else None)(event(proxied, event_id)), 10,
                      what=f"event {event_id} to be {status}")


def test_put_with_a_form_body_and_a_custom_header_arrives_unchanged_with_x_request_id(proxied):
    name = unique()
    resp = requests.put(f"{proxied.url}/orders/{name}?a=1&b=two", data={"qty": "3", "note": "é &x"},
                        headers={"X-Custom": "kept as is", "Connection": "keep-alive"}, timeout=10)
    (seen,) = proxied.upstream.at(f"/orders/{name}")
    event_id = resp.headers["X-Request-Id"]
    assert seen.method == "PUT" and seen.path == f"/orders/{name}?a=1&b=two"
    assert seen.body == b"qty=3&note=%C3%A9+%26x"
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert seen.headers["X-Custom"] == "kept as is"
    assert seen.headers["X-Request-Id"] == event_id
    assert seen.headers["Host"] == f"127.0.0.1:{proxied.upstream.port}"  # the upstream's, not the proxy's
    assert resp.status_code == 201 and resp.headers["X-Upstream"] == "yes"
    assert resp.content == f"answer to PUT /orders/{name}?a=1&b=two".encode()
    assert "X-Bus-Captured" not in resp.headers
    record = settled(proxied, event_id, journal.DELIVERED)
    assert record["tag"] == "proxied.api" and record["route"] == "proxied"
    assert record["request"]["method"] == "PUT" and record["request"]["query"] == "a=1&b=two"
    assert [a["status_code"] for a in record["attempt_log"]] == [201]
    shown = run_bus(None, "events", event_id, env=proxied.env)
    assert f"request   PUT /orders/{name}?a=1&b=two" in shown.stdout and "x-custom: kept as is" in shown.stdout


def test_upstream_down_gives_502_and_a_dead_request_that_replay_delivers_byte_for_byte(proxied):
    name = unique()
    body = bytes(range(256)) * 4  # binary, every byte value
    port = proxied.upstream.port
    proxied.upstream.stop()
    try:
        resp = requests.post(f"{proxied.url}/bin/{name}?x=1", data=body, timeout=10,
                             headers={"Content-Type": "application/octet-stream", "X-Custom": "v"})
    finally:
        proxied.upstream._server = None
        proxied.upstream.port = port
        proxied.upstream.start()
    assert resp.status_code == 502
    event_id = resp.headers["X-Request-Id"]
    record = settled(proxied, event_id, journal.DEAD)
    assert record["attempt_log"][0]["status_code"] is None
    listed = run_bus(None, "events", "--status", "dead", "--tag", "proxied.api", "--json", env=proxied.env)
    assert event_id in [e["id"] for e in orjson.loads(listed.stdout)["events"]]
    assert proxied.upstream.at(f"/bin/{name}") == []

    out = run_bus(None, "replay", "--id", event_id, env=proxied.env)
    assert out.returncode == 0, out.stderr
    (seen,) = wait_until(lambda: proxied.upstream.at(f"/bin/{name}"), 15, what="the replay at the upstream")
    assert seen.method == "POST" and seen.path == f"/bin/{name}?x=1"
    assert seen.body == body
    assert seen.headers["X-Request-Id"] == event_id
    assert seen.headers["X-Custom"] == "v" and seen.headers["Content-Type"] == "application/octet-stream"
    settled(proxied, event_id, journal.DELIVERED)


def test_hop_by_hop_headers_stay_at_the_proxy_and_credentials_are_forwarded_but_not_kept(proxied):
    name = unique()
    resp = requests.post(f"{proxied.url}/hop/{name}", data=b"x", timeout=10,
                         headers={"Connection": "X-Hop", "X-Hop": "1", "Authorization": "Bearer live-only",
                                  "X-Request-Id": "the-clients-own"})
    (seen,) = proxied.upstream.at(f"/hop/{name}")
    assert "X-Hop" not in seen.headers
    assert seen.headers["Authorization"] == "Bearer live-only"
    assert seen.headers["X-Request-Id"] == resp.headers["X-Request-Id"] != "the-clients-own"
    record = settled(proxied, resp.headers["X-Request-Id"], journal.DELIVERED)
    kept = {k.lower() for k, _ in record["request"]["headers"]}
    assert "authorization" not in kept and "x-hop" not in kept and "x-request-id" not in kept
    assert "live-only" not in orjson.dumps(record).decode()


def test_head_answers_pass_through_without_a_body(proxied):
    name = unique()
    resp = requests.head(f"{proxied.url}/head/{name}", timeout=10)
    assert resp.status_code == 201 and resp.content == b"" and int(resp.headers["Content-Length"]) > 0
    settled(proxied, resp.headers["X-Request-Id"], journal.DELIVERED)
    assert requests.get(f"{proxied.url}/head/{name}/after", timeout=10).status_code == 201


def test_an_upstream_slower_than_read_timeout_gives_504_and_a_dead_request(proxied):
    resp = requests.get(f"{proxied.url}/slow/{unique()}", timeout=10)
    assert resp.status_code == 504
    record = settled(proxied, resp.headers["X-Request-Id"], journal.DEAD)
    assert "within 2s" in record["attempt_log"][0]["error"]


def test_a_body_over_bus_max_body_is_refused_with_413_and_not_forwarded(proxied):
    name = unique()
    resp = requests.post(f"{proxied.url}/big/{name}", data=b"x" * (24 * 1024 * 1024 + 1), timeout=30)
    assert resp.status_code == 413 and "BUS_MAX_BODY" in resp.json()["error"]
    assert proxied.upstream.at(f"/big/{name}") == []


def test_a_status_in_retryable_is_passed_to_the_client_and_leaves_the_request_dead(proxied):
    name = unique()
    proxied.upstream.statuses[f"/busy/{name}"] = 503
    resp = requests.delete(f"{proxied.url}/busy/{name}", timeout=10)
    assert resp.status_code == 503 and resp.headers["X-Upstream"] == "yes"
    record = settled(proxied, resp.headers["X-Request-Id"], journal.DEAD)
    assert record["attempt_log"][0]["status_code"] == 503


def test_replay_to_staging_leaves_the_upstream_untouched(proxied):
    name = unique()
    resp = requests.patch(f"{proxied.url}/stage/{name}", data=b'{"a": 1}', timeout=10,
                          headers={"Content-Type": "application/json"})
    event_id = resp.headers["X-Request-Id"]
    settled(proxied, event_id, journal.DELIVERED)
    out = run_bus(None, "replay", "--status", "delivered", "--id", event_id, "--to", proxied.staging.url,
                  env=proxied.env)
    assert out.returncode == 0, out.stderr
    (copy,) = wait_until(lambda: proxied.staging.at(f"/stage/{name}"), 15, what="the copy at staging")
    assert copy.method == "PATCH" and copy.body == b'{"a": 1}' and copy.headers["X-Request-Id"] == event_id
    time.sleep(0.5)
    assert len(proxied.upstream.at(f"/stage/{name}")) == 1  # the live request only
    assert event(proxied, event_id)["status"] == journal.DELIVERED


def test_a_20_mb_streamed_upload_and_a_chunked_response_pass_through(proxied):
    name = unique()
    piece = os.urandom(1024 * 1024)

    def pieces() -> Iterator[bytes]:
        for _ in range(20):
            yield piece

    resp = requests.post(f"{proxied.url}/upload/{name}", data=pieces(), timeout=60,
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201
    assert resp.text == hashlib.sha256(piece * 20).hexdigest()
    record = journal.load(proxied.redis.client(), resp.headers["X-Request-Id"])
    assert record["body"] == piece * 20

    with requests.get(f"{proxied.url}/chunked/{name}", stream=True, timeout=30) as streamed:
        assert streamed.status_code == 200 and streamed.headers.get("Transfer-Encoding") == "chunked"
        got = b"".join(streamed.iter_content(65536))
    assert got == b"".join((b"%04d" % i) * 1000 for i in range(50))
    journal.purge(proxied.redis.client(), [record])


def test_redis_killed_mid_load_forwards_uncaptured_requests_marked_and_loses_nothing_captured(proxied):
    name = unique()
    answers: list[tuple[str, bool]] = []
    session = requests.Session()
    deadline = time.monotonic() + 60
    for i in range(300):
        if time.monotonic() > deadline:
            break
        if i == 100:
            proxied.redis.kill()
        if i == 200:
            proxied.redis.start()
        resp = session.post(f"{proxied.url}/load/{name}/{i}", data=b"%d" % i, timeout=10)
        assert resp.status_code == 201  # the API stays up with the bus down
        answers.append((resp.headers["X-Request-Id"], resp.headers.get("X-Bus-Captured") != "no"))
    assert len(proxied.upstream.at(f"/load/{name}/")) == len(answers) == 300
    captured = [i for i, ok in answers if ok]
    assert len(captured) < len(answers)  # some went through while Redis was down, marked as such
    client = proxied.redis.client()
    wait_until(lambda: all((journal.load(client, i) or {}).get("status") == journal.DELIVERED for i in captured),
               15, what="every captured request delivered in the journal")
    wait_until(lambda: requests.post(f"{proxied.url}/load/{name}/after", timeout=10).ok, 5)
    counts = dict(((k, r), n) for k, r, _, n in journal.counters(client))
    assert counts.get(("uncaptured", "proxied"), 0) >= len(answers) - len(captured)


def test_require_capture_refuses_with_503_while_redis_is_down(proxied, tmp_path):
    proc, url = start_proxy(proxied.env, tmp_path / "strict.log", proxied.upstream.url, "--require-capture")
    name = unique()
    try:
        proxied.redis.kill()
        resp = requests.post(f"{url}/strict/{name}", data=b"x", timeout=10)
        assert resp.status_code == 503 and "require-capture" in resp.json()["error"]
        assert proxied.upstream.at(f"/strict/{name}") == []
    finally:
        proxied.redis.start()
        proc.stop()


def test_an_upstream_with_a_path_prefix_gets_requests_below_it(proxied, tmp_path):
    proc, url = start_proxy(proxied.env, tmp_path / "prefixed.log", f"{proxied.upstream.url}/v2/")
    name = unique()
    try:
        resp = requests.get(f"{url}/items/{name}?q=1", timeout=10)
    finally:
        proc.stop()
    assert resp.status_code == 201
    assert [s.path for s in proxied.upstream.at(f"/v2/items/{name}")] == [f"/v2/items/{name}?q=1"]


def test_a_paced_replay_to_staging_keeps_the_original_gaps_and_sums_up_the_answers(proxied):
    name = unique()
    ids = []
    for i in range(3):
        ids.append(requests.post(f"{proxied.url}/paced/{name}/{i}", data=b"%d" % i, timeout=10).headers["X-Request-Id"])
        time.sleep(0.4)
    proxied.staging.statuses[f"/paced/{name}/2"] = 404
    for event_id in ids:
        settled(proxied, event_id, journal.DELIVERED)
    args = ["replay", "--status", "delivered", "--to", proxied.staging.url, "--pace", "original", "--wait", "20"]
    out = run_bus(None, *args, *(a for i in ids for a in ("--id", i)), env=proxied.env)
    assert out.returncode == 0, out.stderr
    copies = proxied.staging.at(f"/paced/{name}/")
    assert [c.path for c in copies] == [f"/paced/{name}/{i}" for i in range(3)]
    assert "the copies' answers: 201: 2, 404: 1" in out.stdout
    sent = [c["at"] for c in journal.last_copies(proxied.redis.client(), ids)]
    assert sent[2] - sent[0] >= 0.6  # 0.8 s apart when captured; a rate-free replay sends them at once


def test_a_route_with_a_signing_secret_signs_proxied_requests_and_their_replays(proxied, tmp_path):
    proc, url = start_proxy(proxied.env, tmp_path / "signed.log", proxied.upstream.url, "--retryable", "503",
                            tag="signedcap.api")
    name = unique()
    proxied.upstream.statuses[f"/signed/{name}"] = 503
    try:
        resp = requests.post(f"{url}/signed/{name}", data=b"pay me", timeout=10)
    finally:
        proc.stop()
    event_id = resp.headers["X-Request-Id"]
    settled(proxied, event_id, journal.DEAD)
    del proxied.upstream.statuses[f"/signed/{name}"]
    assert run_bus(None, "replay", "--id", event_id, env=proxied.env).returncode == 0
    live, replayed = wait_until(lambda: (lambda s: s if len(s) == 2 else None)(proxied.upstream.at(f"/signed/{name}")),
                                15, what="the replay at the upstream")
    key = signing_key(ROUTE_SECRETS["BUS_TEST_SIGNING_NEW"])
    for seen in (live, replayed):
        assert seen.headers["webhook-id"] == event_id == seen.headers["X-Request-Id"]
        expected = signed_headers(event_id, b"pay me", (key,), float(seen.headers["webhook-timestamp"]))
        assert seen.headers["webhook-signature"] == expected["webhook-signature"]


def test_a_hung_redis_costs_the_api_one_redis_timeout_not_one_per_request(proxied, tmp_path):
    env = {**proxied.env, "BUS_REDIS_TIMEOUT": "1"}
    proc, url = start_proxy(env, tmp_path / "hung.log", proxied.upstream.url)
    name = unique()
    session = requests.Session()
    session.get(f"{url}/hung/{name}/warm", timeout=10)
    os.kill(proxied.redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answers = [session.get(f"{url}/hung/{name}/{i}", timeout=10) for i in range(20)]
        took = time.monotonic() - started
    finally:
        os.kill(proxied.redis.proc.pid, signal.SIGCONT)
        proc.stop()
    assert all(a.status_code == 201 and a.headers["X-Bus-Captured"] == "no" for a in answers)
    assert took < 4  # one 1 s timeout, then a try a second at most; 20 s if each request waited


def test_a_request_in_flight_when_the_proxy_is_killed_is_sent_again_by_lost_task_recovery(proxied, tmp_path):
    proc, url = start_proxy(proxied.env, tmp_path / "killed.log", proxied.upstream.url)
    name = unique()
    client_saw: list[BaseException] = []

    def send() -> None:
        try:
            requests.post(f"{url}/stall/{name}", data=b"in flight", timeout=10)
        except requests.ConnectionError as exc:
            client_saw.append(exc)

    cut = threading.Thread(target=send, daemon=True)
    cut.start()
    (live,) = wait_until(lambda: proxied.upstream.at(f"/stall/{name}"), 10, what="the request at the upstream")
    proc.signal(signal.SIGKILL)  # before the upstream answers: the outcome is never recorded
    proc.stop()
    cut.join(10)
    assert client_saw  # the client got no answer, so it cannot know; the bus sends it again
    event_id = live.headers["X-Request-Id"]
    assert journal.load(proxied.redis.client(), event_id)["status"] == journal.QUEUED
    proxied.worker.stop()  # a worker (re)connecting runs lost-task recovery
    proxied.worker = start_worker(proxied.env, proxied.tmp / "worker-2.log", "proxied", "signedcap")
    again = wait_until(lambda: proxied.upstream.at(f"/stall/{name}")[1:], 30, what="the request sent again")
    assert again[0].headers["X-Request-Id"] == event_id and again[0].body == b"in flight"
    settled(proxied, event_id, journal.DELIVERED)
