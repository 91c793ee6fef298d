"""The HTTP ingress takes what Fluentd's in_http takes: form fields, msgpack bodies, ?time=, gzip, arrays as batches."""
from __future__ import annotations

import gzip
import json
import uuid

import msgpack
import pytest
import requests

from conftest import journaled, parked_tag, wait_until


def bodies(bus, tag: str) -> list[dict]:
    return sorted((json.loads(e["body"]) for e in journaled(bus, tag)), key=lambda r: r["n"])


@pytest.mark.parametrize("how", ["json form", "msgpack form", "multipart json", "multipart msgpack file",
                                 "msgpack body", "x-msgpack body", "json query", "gzip json array"])
def test_in_http_style_posts_are_accepted_as_batches(bus, how):
    tag = parked_tag()
    url = f"{bus.url}/{tag}?time=1700000000.25"
    batch = [{"n": 1}, {"n": 2}]
    send = {
        "json form": lambda: requests.post(url, data={"json": json.dumps(batch)}, timeout=10),
        "msgpack form": lambda: requests.post(url, data={"msgpack": msgpack.packb(batch)}, timeout=10),
        "multipart json": lambda: requests.post(url, files={"json": (None, json.dumps(batch))}, timeout=10),
        "multipart msgpack file": lambda: requests.post(url, files={"msgpack": ("e.bin", msgpack.packb(batch))}, timeout=10),
        "msgpack body": lambda: requests.post(url, data=msgpack.packb(batch), timeout=10,
                                              headers={"Content-Type": "application/msgpack"}),
        "x-msgpack body": lambda: requests.post(url, data=msgpack.packb(batch), timeout=10,
                                                headers={"Content-Type": "application/x-msgpack"}),
        "json query": lambda: requests.post(f"{bus.url}/{tag}", params={"json": json.dumps(batch)}, timeout=10),
        "gzip json array": lambda: requests.post(url, data=gzip.compress(json.dumps(batch).encode()), timeout=10,
                                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}),
    }[how]
    resp = send()
    # 202, not in_http's 200: every Fluentd-family HTTP client takes any 2xx (see README).
    assert resp.status_code == 202, resp.text
    assert len(resp.json()["ids"]) == 2
    assert bodies(bus, tag) == batch


def test_in_http_form_without_an_event_is_refused_with_400(bus):
    resp = requests.post(f"{bus.url}/parked.x", files={"other": (None, "{}")}, timeout=10)
    assert resp.status_code == 400 and "'json', 'msgpack' or 'ndjson' field" in resp.json()["error"]


def test_msgpack_event_is_delivered_as_json(bus):
    name = uuid.uuid4().hex[:8]
    resp = requests.post(f"{bus.url}/api.{name}", data=msgpack.packb({"a": "ü", "b": b"bin-as-text"}), timeout=10,
                         headers={"Content-Type": "application/msgpack"})
    assert resp.status_code == 202
    (got,) = wait_until(lambda: bus.receiver.to(f"/api/{name}/"), 15, what="the msgpack event")
    assert json.loads(got.body) == {"a": "ü", "b": "bin-as-text"}
