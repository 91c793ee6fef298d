"""An open bus (no BUS_TOKENS) and the browsers on its network: no cross-site writes, no DNS rebinding,
no content sniffing, and paths that are no tag refused as bad tags."""
from __future__ import annotations

import socket
import uuid

import pytest
import requests

from conftest import bus_env, start_ingress


def raw(url: str, request: bytes) -> bytes:
    """One request as bytes on its own connection; the answer's head and what came with it."""
    host, port = url.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        return sock.recv(65536)


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.example"},
], ids=["origin", "null-origin", "sec-fetch-cross-site", "sec-fetch-same-site"])
def test_a_cross_site_post_is_refused_and_enqueues_nothing(bus, parked_len, headers):
    resp = requests.post(f"{bus.url}/parked.x", data="a=1", timeout=10,
                         headers={"Content-Type": "text/plain", **headers})
    assert resp.status_code == 403 and "another site" in resp.json()["error"], resp.text
    replay = requests.post(f"{bus.url}/events/replay", json={"status": "dead"}, headers=headers, timeout=10)
    assert replay.status_code == 403
    assert parked_len() == 0


def test_a_same_origin_post_and_a_program_without_origin_are_accepted(bus):
    host = bus.url.split("//", 1)[1]
    same = requests.post(f"{bus.url}/parked.x", json={}, timeout=10,
                         headers={"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 202, same.text
    assert bus.post("parked.x", "{}").status_code == 202


def test_a_page_following_a_link_may_still_open_the_console(bus):
    resp = requests.get(f"{bus.url}/console", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert resp.status_code == 200


@pytest.mark.parametrize("path", ["/events", "/stats", "/api.x"])
def test_a_host_name_the_open_bus_does_not_know_is_refused_against_dns_rebinding(bus, path):
    method = "POST" if path == "/api.x" else "GET"
    resp = requests.request(method, f"{bus.url}{path}", data="{}", headers={"Host": "rebind.evil.example:8080"},
                            timeout=10)
    assert resp.status_code == 403, resp.text
    assert "BUS_ALLOWED_HOSTS" in resp.json()["error"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]:8080", "ingress:8080", "bus.localhost"])
def test_addresses_and_names_no_one_else_can_point_here_are_answered(bus, host):
    assert requests.get(f"{bus.url}/events?limit=1", headers={"Host": host}, timeout=10).status_code == 200


def test_bus_allowed_hosts_lets_a_named_host_in(bus, tmp_path):
    env = bus_env(bus.redis.url, bus.routes_dir, BUS_ALLOWED_HOSTS="*.corp.example, bus.other.example")
    proc, url = start_ingress(env, tmp_path / "ingress.log")
    try:
        for host, status in (("bus.corp.example", 200), ("bus.other.example:80", 200), ("corp.example.evil", 403)):
            assert requests.get(f"{url}/stats", headers={"Host": host}, timeout=10).status_code == status, host
    finally:
        proc.stop()


def test_every_answer_says_nosniff(bus):
    answers = [
        bus.post("parked.x", "{}"),                                          # 202 on the event loop
        bus.post("nomatch.x", "{}"),                                         # 404 on the event loop
        requests.get(f"{bus.url}/events?limit=1", timeout=10),               # the werkzeug app
        requests.get(f"{bus.url}/nothing-here", timeout=10),                 # its 404
    ]
    for resp in answers:
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", (resp.status_code, resp.headers)
    garbled = raw(bus.url, b"NOT HTTP AT ALL\r\n\r\n")                      # uvicorn's own 400
    assert garbled.startswith(b"HTTP/1.1 400") and b"nosniff" in garbled.lower(), garbled[:300]


@pytest.mark.parametrize("path", ["//parked.x", "/parked.x%0a", "/parked.x%0d%0aX-Injected:%201", "///"])
def test_a_post_to_a_path_that_is_no_tag_is_refused_as_a_bad_tag(bus, parked_len, path):
    answer = raw(bus.url, f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                          f"Content-Length: 2\r\nConnection: close\r\n\r\n{{}}".encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    assert b"is invalid" in answer or b"empty" in answer
    assert parked_len() == 0


def test_a_tag_outside_the_ascii_rules_is_still_named_in_the_error(bus):
    name = uuid.uuid4().hex[:6]
    resp = requests.post(f"{bus.url}//parked.{name}", data="{}", timeout=10)
    assert resp.status_code == 400 and f"/parked.{name}" in resp.json()["error"]
