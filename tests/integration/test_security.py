"""Trust boundaries: producer tokens with tag scopes, signed deliveries, safe outbound requests, secrets kept secret."""
from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid

import pytest
import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bus import journal
from bus.auth import new_token
from conftest import ROUTE_SECRETS, Receiver, bus_env, free_port, start_ingress, start_worker, wait_until


@pytest.fixture(scope="module")
def guarded(bus, tmp_path_factory):
    """An ingress with BUS_TOKENS: one producer token for api.**, one operator token with @journal."""
    tmp = tmp_path_factory.mktemp("tokens")
    producer, producer_hash = new_token()
    operator, operator_hash = new_token()
    (tmp / "tokens").write_text(f"# producers\n{producer_hash}  api.**  orders-service\n"
                                f"{operator_hash}  @journal  on-call\n")
    env = {**bus.env, "BUS_TOKENS": str(tmp / "tokens")}
    ingress, url = start_ingress(env, tmp / "ingress.log")
    yield url, producer, operator
    ingress.stop()


def test_without_a_token_the_guarded_ingress_answers_401(guarded):
    url, _, _ = guarded
    resp = requests.post(f"{url}/api.x", data="{}", timeout=10)
    assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = requests.post(f"{url}/api.x", data="{}", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.json() == {"error": "unknown token"}


def test_a_token_sends_only_the_tags_its_patterns_allow(bus, guarded):
    url, producer, _ = guarded
    auth = {"Authorization": f"Bearer {producer}"}
    name = uuid.uuid4().hex[:8]
    ok = requests.post(f"{url}/api.{name}", data="{}", headers=auth, timeout=10)
    assert ok.status_code == 202
    wait_until(lambda: bus.receiver.ids(f"/api/{name}/") == ok.json()["ids"], 15, what="delivery")
    refused = requests.post(f"{url}/parked.x", data="{}", headers=auth, timeout=10)
    assert refused.status_code == 403
    assert refused.json()["error"] == "token 'orders-service' may not send tag 'parked.x'"
    assert producer not in refused.text


def test_the_journal_needs_a_journal_token(guarded):
    url, producer, operator = guarded
    assert requests.get(f"{url}/events", headers={"Authorization": f"Bearer {producer}"}, timeout=10).status_code == 403
    listed = requests.get(f"{url}/events", headers={"Authorization": f"Bearer {operator}"}, timeout=10)
    assert listed.status_code == 200 and "events" in listed.json()
    sent = requests.post(f"{url}/api.x", data="{}", headers={"Authorization": f"Bearer {operator}"}, timeout=10)
    assert sent.status_code == 403, "a journal token cannot send events"
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("head", [
    "GET /events HTTP/1.1", "POST /events/replay HTTP/1.1", "GET /stats HTTP/1.1", "POST /api.x HTTP/1.1"])
def test_a_request_without_a_token_is_refused_on_its_head_before_any_body_is_read(guarded, head):
    """Nothing of the promised 30 MB body is sent: the 401 must come from the head alone."""
    url, _, _ = guarded
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"{head}\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {30 * 1024 * 1024}\r\n\r\n".encode())
        try:
            answer = sock.recv(4096)
        except TimeoutError:
            answer = b""
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200] or "no answer before the body was sent"


def test_open_bus_on_a_public_address_warns_loudly(bus, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bus", "serve", "--bind", f"0.0.0.0:{port}", "--workers", "1",
                             "--forward", f"127.0.0.1:{free_port()}"],
                            env=bus.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        # The forward listener and uvicorn share the process and may speak first: read the start-up
        # lines (at most 20, for at most 20 s) until the warning shows.
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while len(lines) < 20 and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            lines.append(proc.stdout.readline())
            if "WARNING: no BUS_TOKENS and bound to 0.0.0.0" in lines[-1]:
                break
        assert any("WARNING: no BUS_TOKENS and bound to 0.0.0.0" in line for line in lines), lines
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def test_signed_delivery_verifies_with_either_secret_while_rotating(bus):
    name = uuid.uuid4().hex[:8]
    (event_id,) = bus.post(f"signed.{name}", '{"pay": 10}').json()["ids"]
    (got,) = wait_until(lambda: bus.receiver.to(f"/signed/{name}"), 15, what="signed delivery")
    assert got.headers["webhook-id"] == event_id
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    for secret in (ROUTE_SECRETS["BUS_TEST_SIGNING_OLD"], ROUTE_SECRETS["BUS_TEST_SIGNING_NEW"]):
        assert Webhook(secret).verify(got.body, got.headers) == {"pay": 10}
    assert got.headers["Authorization"] == ROUTE_SECRETS["BUS_TEST_ENDPOINT_TOKEN"]
    tampered = dict(got.headers, **{"webhook-id": str(uuid.uuid4())})
    with pytest.raises(WebhookVerificationError):
        Webhook(ROUTE_SECRETS["BUS_TEST_SIGNING_NEW"]).verify(got.body, tampered)


def test_a_copy_sent_elsewhere_carries_no_route_credential_nor_the_route_signature(bus):
    name = uuid.uuid4().hex[:8]
    (event_id,) = bus.post(f"signed.{name}", '{"pay": 11}').json()["ids"]
    (original,) = wait_until(lambda: bus.receiver.to(f"/signed/{name}"), 15, what="signed delivery")
    assert "webhook-signature" in original.headers and "Authorization" in original.headers
    wait_until(lambda: journal.load(bus.redis.client(), event_id)["status"] == journal.DELIVERED, 15,
               what="the delivery to be journaled")
    copied = requests.post(f"{bus.url}/events/replay", json={"ids": [event_id], "status": "delivered",
                                                             "to": f"{bus.receiver.url}/copies/{name}"}, timeout=10)
    assert copied.status_code == 200 and copied.json()["replayed"] == 1, copied.text
    (copy,) = wait_until(lambda: bus.receiver.to(f"/copies/{name}"), 15, what="the copy")
    assert copy.headers["X-Bus-Replay"] == "copy" and copy.headers["X-Request-Id"] == event_id
    assert json.loads(copy.body) == {"pay": 11}
    leaked = {h for h in ("Authorization", "webhook-id", "webhook-timestamp", "webhook-signature") if h in copy.headers}
    assert not leaked, f"a copy to another URL carried the route's {sorted(leaked)}"
    assert not any(secret in str(copy.headers) for secret in ROUTE_SECRETS.values())


def test_secrets_never_reach_logs_routes_output_or_the_journal(bus):
    name = uuid.uuid4().hex[:8]
    (event_id,) = bus.post(f"signed.{name}", "{}").json()["ids"]
    wait_until(lambda: bus.receiver.to(f"/signed/{name}"), 15, what="signed delivery")
    routes = subprocess.run([sys.executable, "-m", "bus", "routes", f"signed.{name}"], env=bus.env,
                            capture_output=True, text=True, timeout=60)
    shown = json.dumps(journal.show(bus.redis.client(), event_id))
    logs = "".join(p.read_text(errors="replace") for p in bus.tmp.glob("*.log"))
    for secret in ROUTE_SECRETS.values():
        for where, text in (("bus routes", routes.stdout + routes.stderr), ("journal", shown), ("logs", logs)):
            assert secret not in text and secret.split("_", 1)[-1] not in text, f"a secret leaked into {where}"


def test_a_route_secret_missing_from_the_environment_stops_start_up_naming_the_key(bus):
    env = {k: v for k, v in bus.env.items() if k != "BUS_TEST_SIGNING_NEW"}
    done = subprocess.run([sys.executable, "-m", "bus", "routes"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "signed.toml: key 'signing_secret': environment variable BUS_TEST_SIGNING_NEW is not set" in done.stderr


def _self_signed(tmp_path, name: str) -> tuple:
    cert, key = tmp_path / f"{name}-cert.pem", tmp_path / f"{name}-key.pem"
    subprocess.run([shutil.which("openssl") or "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return cert, key


def _tls_receiver(tmp_path, name: str = "server", client_ca=None):
    """An HTTPS receiver with a self-signed certificate for 127.0.0.1; with `client_ca`, it also
    requires a client certificate signed by it (mutual TLS)."""
    cert, key = _self_signed(tmp_path, name)
    receiver = Receiver()
    receiver.start()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_ca)
    receiver._server.socket = context.wrap_socket(receiver._server.socket, server_side=True)
    return receiver, cert


def test_tls_is_verified_by_default_and_ca_file_trusts_a_private_ca(bus, tmp_path):
    receiver, cert = _tls_receiver(tmp_path)
    client_cert, client_key = _self_signed(tmp_path, "client")
    mutual, mutual_cert = _tls_receiver(tmp_path, "mutual", client_ca=client_cert)
    routes = tmp_path / "routes"
    routes.mkdir()
    https = f"https://127.0.0.1:{receiver.port}"
    (routes / "a_trusted.toml").write_text(f'match = "tls.ok"\nendpoint = "{https}/ok"\nca_file = "{cert}"\n')
    (routes / "b_untrusted.toml").write_text(f'match = "tls.bad"\nendpoint = "{https}/bad"\n')
    (routes / "c_client_cert.toml").write_text(
        f'match = "tls.mine"\nendpoint = "https://127.0.0.1:{mutual.port}/mine"\nca_file = "{mutual_cert}"\n'
        f'client_cert = "{client_cert}"\nclient_key = "{client_key}"\n')
    (routes / "d_no_client_cert.toml").write_text(
        f'match = "tls.anon"\nendpoint = "https://127.0.0.1:{mutual.port}/anon"\nca_file = "{mutual_cert}"\n')
    env = bus_env(bus.redis.url, routes)
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    try:
        ok = requests.post(f"{url}/tls.ok", data="{}", timeout=10).json()["ids"]
        bad = requests.post(f"{url}/tls.bad", data="{}", timeout=10).json()["ids"]
        mine = requests.post(f"{url}/tls.mine", data="{}", timeout=10).json()["ids"]
        anon = requests.post(f"{url}/tls.anon", data="{}", timeout=10).json()["ids"]
        wait_until(lambda: receiver.ids("/ok") == ok, 20, what="delivery over verified TLS")
        wait_until(lambda: mutual.ids("/mine") == mine, 20, what="delivery with the route's client certificate")
        client = bus.redis.client()
        wait_until(lambda: journal.attempts(client, bad[0]), 20, what="the untrusted attempt")
        assert "CERTIFICATE_VERIFY_FAILED" in journal.attempts(client, bad[0])[0]["error"]
        assert not receiver.to("/bad")
        wait_until(lambda: journal.attempts(client, anon[0]), 20, what="the attempt without a client certificate")
        assert journal.attempts(client, anon[0])[0]["status_code"] is None
        assert not mutual.to("/anon")
    finally:
        worker.stop()
        ingress.stop()
        receiver.stop()
        mutual.stop()


def test_redirects_are_followed_only_when_allowed_and_only_on_the_same_origin(bus, tmp_path):
    receiver = Receiver()
    receiver.start()
    other = Receiver()
    other.start()
    receiver.script("/same", (307, {"Location": "/moved"}, b""))
    receiver.script("/away", (307, {"Location": f"{other.url}/stolen"}, b""))
    receiver.script("/not-allowed", (302, {"Location": "/moved"}, b""))
    routes = tmp_path / "routes"
    routes.mkdir()
    (routes / "a.toml").write_text(f'match = "r.{{same,away}}"\nendpoint = "{receiver.url}/${{tag[1]}}"\n'
                                   'follow_redirects = true\nsecret_headers = { X-Api-Key = "env:KEY" }\n')
    (routes / "b.toml").write_text(f'match = "r.not-allowed"\nendpoint = "{receiver.url}/not-allowed"\n')
    env = {**bus_env(bus.redis.url, routes), "KEY": "k-123"}
    ingress, url = start_ingress(env, tmp_path / "ingress.log")
    worker = start_worker(env, tmp_path / "worker.log")
    client = bus.redis.client()
    try:
        ids = {tag: requests.post(f"{url}/{tag}", data="{}", timeout=10).json()["ids"][0]
               for tag in ("r.same", "r.away", "r.not-allowed")}
        wait_until(lambda: all(journal.load(client, i)["status"] in ("delivered", "dead") for i in ids.values()), 20,
                   what="all three settled")
        assert journal.load(client, ids["r.same"])["status"] == "delivered"
        assert receiver.to("/moved")[0].headers["X-Api-Key"] == "k-123"
        away = journal.load(client, ids["r.away"])
        assert away["status"] == "dead" and not other.requests, "never followed to another origin"
        assert journal.attempts(client, ids["r.away"])[0]["location"] == f"{other.url}/stolen"
        assert journal.load(client, ids["r.not-allowed"])["status"] == "dead"
    finally:
        worker.stop()
        ingress.stop()
        receiver.stop()
        other.stop()
