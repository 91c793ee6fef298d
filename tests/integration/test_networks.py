"""Delivering through the networks users have (issue 17): receivers that write head and body apart,
egress proxies, internal CAs, connection age, gzip, unix sockets on the host. Real servers on 127.0.0.1."""
from __future__ import annotations

import gzip
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time

import requests
from fluent import sender
from standardwebhooks.webhooks import Webhook

from bus import intake, journal, settings
from bus.auth import new_token
from conftest import ROUTE_SECRETS, BusProcess, Receiver, bus_env, free_port, start_ingress, start_worker, wait_until
from faultkit import MisbehavingReceiver
from tests.certs import make_ca


class KeepAliveReceiver:
    """Python's http.server on HTTP/1.1 keep-alive, recording each request's X-Request-Id and arrival time.

    By default it answers the way http.server handlers usually do (send_response and end_headers, then
    wfile.write(body)): the head and the body leave in two sends. `one_write` sends the same bytes in one."""

    def __init__(self, one_write: bool = False):
        self.arrivals: list[tuple[str, float]] = []
        self.connections = 0
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                receiver.connections += 1

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.arrivals.append((self.headers.get("X-Request-Id", ""), time.monotonic()))
                if one_write:
                    self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def rate(self) -> float:
        """Requests per second from the first arrival to the last."""
        times = sorted(at for _, at in self.arrivals)
        return (len(times) - 1) / (times[-1] - times[0])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _routes(tmp_path, **files: str):
    routes = tmp_path / "routes"
    routes.mkdir(exist_ok=True)
    for name, text in files.items():
        (routes / f"{name}.toml").write_text(text)
    return routes


def test_a_receiver_that_writes_head_and_body_apart_is_served_at_least_half_as_fast_as_one_that_writes_once(
        bus, tmp_path):
    split, whole = KeepAliveReceiver(), KeepAliveReceiver(one_write=True)
    routes = _routes(tmp_path, a_split=f'match = "net.split"\nendpoint = "{split.url}/in"\n',
                     b_whole=f'match = "net.whole"\nendpoint = "{whole.url}/in"\n')
    env = bus_env(bus.redis.url, routes)
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    events = 200
    try:
        for tag, receiver in (("net.whole", whole), ("net.split", split)):
            # One request of 200 events; the worker sends each on its own, over its kept connections.
            ids = requests.post(f"{url}/{tag}", data="[" + ",".join(["{}"] * events) + "]", timeout=10).json()["ids"]
            # 200 events at the stalled rate (~45/s) take ~5 s: the wait is bounded well past it.
            wait_until(lambda: len({i for i, _ in receiver.arrivals}) >= events, 60, what=f"{events} deliveries to {tag}")
            assert {i for i, _ in receiver.arrivals} == set(ids)
        ratio = split.rate() / whole.rate()
        assert ratio >= 0.5, (f"two-write receiver {split.rate():.0f}/s against one-write {whole.rate():.0f}/s "
                              f"(ratio {ratio:.2f})")
        assert split.connections <= 4, "kept connections are reused, not one per delivery"
    finally:
        worker.stop()
        ingress.stop()
        split.stop()
        whole.stop()


def https_receiver(cert, key) -> Receiver:
    receiver = Receiver()
    receiver.start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver._server.socket = context.wrap_socket(receiver._server.socket, server_side=True)
    return receiver


NETWORK_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


def without_trust_env(env: dict[str, str]) -> dict[str, str]:
    """The environment without the machine's trust store and proxy variables: each test sets its own."""
    return {k: v for k, v in env.items() if k.upper() not in NETWORK_ENV}


class ForwardProxy:
    """proxy.py (PyPI) on 127.0.0.1, requiring Basic credentials; its access log says what went through it."""

    def __init__(self, log, user: str = "bus", password: str = "pr0xy-pw"):
        self.port, self.log = free_port(), log
        self.url = f"http://{user}:{password}@127.0.0.1:{self.port}"
        self._out = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(self.port), "--num-workers", "1",
             "--num-acceptors", "1", "--basic-auth", f"{user}:{password}"],
            stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(self._listening, 30, what="proxy.py to listen")

    def _listening(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"proxy.py exited:\n{self.log.read_text(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def passed(self, what: str) -> int:
        """Access-log lines of requests it passed on that contain `what` (e.g. 'CONNECT 127.0.0.1:443')."""
        return sum(1 for line in self.log.read_text(errors="replace").splitlines() if "access_log" in line and what in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._out.close()


def test_an_internal_ca_in_ssl_cert_file_is_trusted_and_without_it_the_event_retries_on_a_certificate_error(
        bus, tmp_path):
    ca, cert, key = make_ca(tmp_path)
    receiver = https_receiver(cert, key)
    routes = _routes(tmp_path, internal=f'match = "net.internal"\nendpoint = "https://127.0.0.1:{receiver.port}/in"\n'
                                         'retry_max_interval = 1\n')
    env = without_trust_env(bus_env(bus.redis.url, routes))
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    client = bus.redis.client()
    try:
        [event_id] = requests.post(f"{url}/net.internal", data="{}", timeout=10).json()["ids"]
        wait_until(lambda: journal.attempts(client, event_id), 20, what="the attempt without the CA")
        assert "CERTIFICATE_VERIFY_FAILED" in journal.attempts(client, event_id)[0]["error"]
        assert journal.load(client, event_id)["status"] == "retrying", "a certificate error is retried, not dead"
        worker.stop()
        worker = start_worker({**env, "SSL_CERT_FILE": str(ca)}, tmp_path / "worker-trusting.log")
        wait_until(lambda: journal.load(client, event_id)["status"] == "delivered", 30, what="delivery with SSL_CERT_FILE")
        assert receiver.ids("/in") == [event_id]
    finally:
        worker.stop()
        ingress.stop()
        receiver.stop()


def test_deliveries_go_through_the_environments_proxy_straight_past_it_with_no_proxy_and_a_dead_proxy_is_named(
        bus, tmp_path):
    ca, cert, key = make_ca(tmp_path)
    plain, secure = Receiver(), https_receiver(cert, key)
    plain.start()
    proxy = ForwardProxy(tmp_path / "proxy.log")
    dead = f"http://bus:dead-pw@127.0.0.1:{free_port()}"
    wrong = proxy.url.replace("pr0xy-pw", "wrong-pw")
    routes = _routes(
        tmp_path,
        a_plain=f'match = "px.plain"\nendpoint = "{plain.url}/plain"\n',
        b_secure=f'match = "px.secure"\nendpoint = "https://127.0.0.1:{secure.port}/secure"\n',
        c_straight=f'match = "px.straight"\nendpoint = "http://localhost:{plain.port}/straight"\n',
        d_dead=f'match = "px.dead"\nendpoint = "{plain.url}/dead"\nproxy = "{dead}"\nretry_max_interval = 1\n',
        e_wrong=f'match = "px.wrong"\nendpoint = "https://127.0.0.1:{secure.port}/wrong"\nproxy = "{wrong}"\n')
    env = {**without_trust_env(bus_env(bus.redis.url, routes)), "SSL_CERT_FILE": str(ca),
           "HTTP_PROXY": proxy.url, "HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost"}
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    client = bus.redis.client()
    try:
        ids = {tag: requests.post(f"{url}/{tag}", data="{}", timeout=10).json()["ids"][0]
               for tag in ("px.plain", "px.secure", "px.straight", "px.dead", "px.wrong")}
        wait_until(lambda: plain.ids("/plain") == [ids["px.plain"]], 20, what="plain http through the proxy")
        wait_until(lambda: secure.ids("/secure") == [ids["px.secure"]], 20, what="https through CONNECT")
        wait_until(lambda: plain.ids("/straight") == [ids["px.straight"]], 20, what="NO_PROXY straight delivery")
        # proxy.py writes a request's access-log line once it has finished with it (a CONNECT tunnel's
        # when the tunnel ends), which a loaded machine can put after the delivery was seen.
        wait_until(lambda: proxy.passed(f"POST 127.0.0.1:{plain.port}/plain") >= 1, 10, what="the proxy's log of the POST")
        wait_until(lambda: proxy.passed(f"CONNECT 127.0.0.1:{secure.port}") >= 1, 10, what="the proxy's log of the CONNECT")
        assert proxy.passed(f"POST 127.0.0.1:{plain.port}/plain") == 1
        assert proxy.passed(f"CONNECT 127.0.0.1:{secure.port}") == 1
        assert proxy.passed("/straight") == 0 and proxy.passed(f"localhost:{plain.port}") == 0

        wait_until(lambda: journal.attempts(client, ids["px.dead"]), 20, what="the attempt through the dead proxy")
        error = journal.attempts(client, ids["px.dead"])[0]["error"]
        assert f"proxy http://***@127.0.0.1:{dead.rsplit(':', 1)[1]} could not be reached" in error
        assert "dead-pw" not in error
        assert journal.load(client, ids["px.dead"])["status"] == "retrying", "a dead proxy is retried, not dead"
        wait_until(lambda: journal.attempts(client, ids["px.wrong"]), 20, what="the attempt with wrong credentials")
        error = journal.attempts(client, ids["px.wrong"])[0]["error"]
        assert f"refused CONNECT 127.0.0.1:{secure.port}" in error and "407" in error and "wrong-pw" not in error
        assert not plain.to("/dead") and not secure.to("/wrong")

        shown = subprocess.run([sys.executable, "-m", "bus", "routes", "px.secure"], env=env, capture_output=True,
                               text=True, timeout=60).stdout
        assert f"through proxy http://***@127.0.0.1:{proxy.port} (HTTPS_PROXY)" in shown and "pr0xy-pw" not in shown
        shown = subprocess.run([sys.executable, "-m", "bus", "routes", "px.straight"], env=env, capture_output=True,
                               text=True, timeout=60).stdout
        assert "straight, no proxy (NO_PROXY entry 'localhost' matches localhost)" in shown
    finally:
        worker.stop()
        ingress.stop()
        proxy.stop()
        plain.stop()
        secure.stop()


def test_a_route_with_compress_gzip_sends_gzip_bodies_with_content_encoding_and_signs_the_json(bus, tmp_path):
    receiver = Receiver()
    receiver.start()
    routes = _routes(tmp_path, zipped=f'match = "net.zipped"\nendpoint = "{receiver.url}/zipped"\ncompress = "gzip"\n'
                                      'signing_secret = "env:BUS_TEST_SIGNING_NEW"\nbatch_max = 10\n')
    env = bus_env(bus.redis.url, routes)
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        record = {"text": "x" * 2000}
        ids = requests.post(f"{url}/net.zipped", json=[record, record], timeout=10).json()["ids"]
        wait_until(lambda: receiver.to("/zipped"), 20, what="the gzip delivery")
        [got] = receiver.to("/zipped")
        assert got.headers["Content-Encoding"] == "gzip" and len(got.body) < 200
        assert json.loads(gzip.decompress(got.body)) == [record, record]
        assert got.headers["X-Bus-Event-Ids"] == ",".join(ids)
        # A receiver decodes the body, then verifies: the signature is over the JSON, not the gzip bytes.
        Webhook(ROUTE_SECRETS["BUS_TEST_SIGNING_NEW"]).verify(gzip.decompress(got.body), got.headers)
    finally:
        worker.stop()
        ingress.stop()
        receiver.stop()


def _bus_serve_on_unix_sockets(env: dict[str, str], http_sock, forward_sock, log) -> BusProcess:
    return BusProcess(["serve", "--bind", f"unix:{http_sock}", "--forward", f"unix:{forward_sock}", "--workers", "1",
                       "--threads", "2"], env, log).start()


def _answers_on(path) -> bool:
    done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--unix-socket", str(path),
                           "http://localhost/healthz"], capture_output=True, text=True, timeout=10)
    return done.stdout == "200"


def _curl_post(path, tag: str, body: str) -> tuple[int, dict]:
    done = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", "--unix-socket", str(path), "-H",
                           "Content-Type: application/json", "--data-binary", body, f"http://localhost/{tag}"],
                          capture_output=True, text=True, timeout=10)
    answer, _, status = done.stdout.rpartition("\n")
    return int(status), json.loads(answer)


def test_fluent_logger_and_curl_send_over_unix_sockets_that_replace_a_killed_processs_stale_files(bus, tmp_path):
    receiver = Receiver()
    receiver.start()
    routes = _routes(tmp_path, local=f'match = "un.*"\nendpoint = "{receiver.url}/${{tag[1]}}"\n')
    # Short paths: a unix socket path must fit in 108 bytes, and pytest's tmp_path may not.
    folder = tempfile.mkdtemp(prefix="bus-unix-")
    http_sock, forward_sock = os.path.join(folder, "http.sock"), os.path.join(folder, "forward.sock")
    env = {**bus_env(bus.redis.url, routes), "BUS_UNIX_SOCKET_MODE": "600", "BUS_MAX_BODY": "2048"}
    worker = start_worker(env, tmp_path / "worker.log")
    killed = _bus_serve_on_unix_sockets(env, http_sock, forward_sock, tmp_path / "killed.log")
    serving = refused = None
    try:
        wait_until(lambda: _answers_on(http_sock), 30, what="bus serve on its unix socket")
        killed.signal(signal.SIGKILL)
        killed.proc.wait(10)
        assert os.path.exists(http_sock) and os.path.exists(forward_sock), "a killed process leaves its socket files"

        serving = _bus_serve_on_unix_sockets(env, http_sock, forward_sock, tmp_path / "serving.log")
        wait_until(lambda: _answers_on(http_sock), 30, what="bus serve on the stale socket files")
        assert "replacing a stale socket file" in serving.output()
        for path in (http_sock, forward_sock):
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, "BUS_UNIX_SOCKET_MODE"

        refused = _bus_serve_on_unix_sockets(env, http_sock, forward_sock, tmp_path / "refused.log")
        assert refused.proc.wait(30) == 1
        assert f"unix:{forward_sock}: another process is listening on it" in refused.output()

        status, answer = _curl_post(http_sock, "un.curl", '{"via": "curl"}')
        assert status == 202
        [curl_id] = answer["ids"]
        assert _curl_post(http_sock, "nope.curl", "{}") == (404, {"error": "no route matches tag 'nope.curl'; "
                                                                          "add a route whose match covers it"})
        status, answer = _curl_post(http_sock, "un.big", json.dumps({"pad": "x" * 4096}))
        assert status == 413 and "error" in answer, "the same limits as over TCP"

        logger = sender.FluentSender("un", host=f"unix://{forward_sock}", timeout=5)
        assert logger.emit("fluent", {"via": "fluent-logger"}), logger.last_error
        logger.close()
        wait_until(lambda: receiver.ids("/curl") == [curl_id] and len(receiver.to("/fluent")) == 1, 30,
                   what="both deliveries")
        assert json.loads(receiver.to("/fluent")[0].body) == {"via": "fluent-logger"}

        serving.stop()
        assert serving.proc.returncode == 0
        assert not os.path.exists(http_sock) and not os.path.exists(forward_sock), "removed at stop"
    finally:
        for proc in (killed, serving, refused):
            if proc:
                proc.stop()
        worker.stop()
        receiver.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_tokens_guard_the_unix_socket_as_they_guard_the_tcp_port(bus, tmp_path):
    token, digest = new_token()
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{digest}  un.*  local-app\n")
    routes = _routes(tmp_path, local=f'match = "un.*"\nendpoint = "{bus.receiver.url}/un/${{tag[1]}}"\n')
    folder = tempfile.mkdtemp(prefix="bus-unix-")
    http_sock = os.path.join(folder, "http.sock")
    env = {**bus_env(bus.redis.url, routes), "BUS_TOKENS": str(tokens)}
    serving = BusProcess(["serve", "--bind", f"unix:{http_sock}", "--forward", "off", "--workers", "1"], env,
                         tmp_path / "serve.log").start()
    try:
        wait_until(lambda: _answers_on(http_sock), 30, what="bus serve on its unix socket")
        status, answer = _curl_post(http_sock, "un.anon", "{}")
        assert status == 401 and "error" in answer
        done = subprocess.run(["curl", "-s", "-w", "\\n%{http_code}", "--unix-socket", http_sock, "-H",
                               f"Authorization: Bearer {token}", "--data-binary", "{}", "http://localhost/un.signed"],
                              capture_output=True, text=True, timeout=10)
        assert done.stdout.endswith("\n202")
    finally:
        serving.stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_whole_attempt_deadline_holds_in_celerys_threads_pool(bus, tmp_path):
    receiver = MisbehavingReceiver()
    receiver.script("/in", ("trickle", 0.3))  # each byte within read_timeout, the answer never whole
    routes = _routes(tmp_path, trickle=f'match = "net.trickle"\nendpoint = "{receiver.url}/in"\n'
                                       'open_timeout = 1\nread_timeout = 1\nretry_max_interval = 30\n')
    env = bus_env(bus.redis.url, routes)
    log = open(tmp_path / "worker.log", "ab")
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "bus", "worker", "-P", "threads", "-c", "2",
                               "-Q", "bus.trickle", "--loglevel", "INFO", "--without-mingle", "--without-gossip", "--hostname",
                               "trickle-threads@%h"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    client = bus.redis.client()
    try:
        wait_until(lambda: " ready." in (tmp_path / "worker.log").read_text(errors="replace"), 30,
                   what="a threads-pool worker")
        [event_id] = intake.accept(intake.load(settings.load(env)), "net.trickle", [{"n": 1}])
        wait_until(lambda: journal.attempts(client, event_id), 20, what="the trickled attempt")
        attempt = journal.attempts(client, event_id)[0]
        assert attempt["error"].startswith("AttemptDeadline: no complete answer within 2s")
        assert attempt["duration"] < 2 + 0.5, "cut at open_timeout + read_timeout, in a pool thread"
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        log.close()
        receiver.close()
