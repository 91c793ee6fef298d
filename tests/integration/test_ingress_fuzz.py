"""Whatever bytes arrive, the ingress answers with a status it means: never a 500, never an escaped
exception, and nothing of a refused request enqueued (property-based, against a real Redis)."""
from __future__ import annotations

import json
from urllib.parse import quote

from hypothesis import HealthCheck, given, settings as hsettings, strategies as st
from werkzeug.test import Client

from bus import intake, journal, settings
from bus.ingress.http import make_app

ALLOWED = {202, 400, 404, 405, 413}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
content_types = st.sampled_from(["application/json", "application/x-ndjson", "text/plain", "", "application/json; charset=utf-8"])
tags = st.one_of(st.sampled_from(["parked.fuzz", "nobody.fuzz", "api", "parked..x"]), st.text(max_size=40))


def _client(bus) -> tuple[Client, object]:
    bus_intake = intake.load(settings.load(bus.env))
    return Client(make_app(bus_intake)), bus_intake.redis


_cache: dict[int, tuple[Client, object]] = {}


def _client_cache(bus) -> tuple[Client, object]:
    """One in-process app per session bus: hypothesis calls the test hundreds of times."""
    if id(bus) not in _cache:
        _cache[id(bus)] = _client(bus)
    return _cache[id(bus)]


def _check(client: Client, redis, tag: str, body: bytes, content_type: str) -> None:
    before = journal.count(redis, "queued", "parked")
    # Percent-encoded so the test client's own URL parsing cannot choke; the app sees the decoded tag.
    resp = client.post("/" + quote(tag, safe="."), data=body, content_type=content_type)
    assert resp.status_code in ALLOWED, (resp.status_code, resp.get_data())
    assert set(json.loads(resp.get_data())) <= {"ids", "error"}
    if resp.status_code != 202:
        assert journal.count(redis, "queued", "parked") == before, "a refused request left something behind"


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=tags, body=st.binary(max_size=300), content_type=content_types)
def test_random_bytes_never_break_the_ingress(bus, tag, body, content_type):
    _check(*_client_cache(bus), tag, body, content_type)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=tags, value=json_values, ndjson=st.booleans())
def test_random_json_never_breaks_the_ingress(bus, tag, value, ndjson):
    if ndjson and isinstance(value, list):
        body = b"\n".join(json.dumps(v).encode() for v in value)
        _check(*_client_cache(bus), tag, body, "application/x-ndjson")
    else:
        _check(*_client_cache(bus), tag, json.dumps(value).encode(), "application/json")


_cache: dict[int, tuple[Client, object]] = {}


def _client_cache(bus) -> tuple[Client, object]:
    if id(bus) not in _cache:
        _cache[id(bus)] = _client(bus)
    return _cache[id(bus)]
