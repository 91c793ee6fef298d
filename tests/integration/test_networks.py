"""Delivering through the networks users have (issue 17): receivers that write head and body apart,
egress proxies, internal CAs, connection age, gzip, unix sockets on the host. Real servers on 127.0.0.1."""
from __future__ import annotations

import http.server
import ssl
import threading
import time

import requests

from bus import journal
from tests.certs import make_ca
from conftest import Receiver, bus_env, start_ingress, start_worker, wait_until



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


def without_trust_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}


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
