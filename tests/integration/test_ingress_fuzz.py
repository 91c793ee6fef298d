"""Whatever bytes arrive, the ingress answers with a status it means: never a 500, never an escaped
exception, and nothing of a refused request enqueued (property-based, against a real Redis).

Each example goes to both ways a POST /<tag> is answered: the werkzeug app and the event loop's own
path (asgi.Ingress, what `bus serve` runs); they must give the same status and the same error."""
from __future__ import annotations

import asyncio
import json
from urllib.parse import quote, unquote

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from werkzeug.test import Client

from bus import intake, journal, settings
from bus.ingress.asgi import Ingress
from bus.ingress.http import make_app

ALLOWED = {202, 400, 404, 405, 413}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
content_types = st.sampled_from(["application/json", "application/x-ndjson", "text/plain", "", "application/json; charset=utf-8"])
tags = st.one_of(st.sampled_from(["parked.fuzz", "nobody.fuzz", "api", "parked..x"]), st.text(max_size=40))


class Apps:
    """The werkzeug app and the ASGI app over one intake, in this process; the ASGI one on its own loop."""

    def __init__(self, bus):
        self.intake = intake.load(settings.load(bus.env))
        self.wsgi = Client(make_app(self.intake))
        self.asgi = Ingress(self.intake, None, threads=2)
        self.loop = asyncio.new_event_loop()

    def post_asgi(self, path: str, body: bytes, content_type: str) -> tuple[int, bytes]:
        headers = [(b"content-length", b"%d" % len(body))]
        if content_type:
            headers.append((b"content-type", content_type.encode()))
        scope = {"type": "http", "method": "POST", "path": unquote(path), "raw_path": path.encode(),
                 "query_string": b"", "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
                 "scheme": "http", "http_version": "1.1"}
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        sent: list[dict] = []

        async def receive() -> dict:
            return incoming.pop(0) if incoming else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.asgi(scope, receive, send))
        return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


_cache: dict[int, Apps] = {}


def _apps(bus) -> Apps:
    """One pair of in-process apps per session bus: hypothesis calls the test hundreds of times."""
    if id(bus) not in _cache:
        _cache[id(bus)] = Apps(bus)
    return _cache[id(bus)]


def _check(apps: Apps, tag: str, body: bytes, content_type: str) -> None:
    redis = apps.intake.redis
    before = journal.count(redis, "queued", "parked")
    # Percent-encoded so the test client's own URL parsing cannot choke; the app sees the decoded tag.
    path = "/" + quote(tag, safe=".")
    resp = apps.wsgi.post(path, data=body, content_type=content_type)
    assert resp.status_code in ALLOWED, (resp.status_code, resp.get_data())
    answer = json.loads(resp.get_data())
    assert set(answer) <= {"ids", "error"}
    status, raw = apps.post_asgi(path, body, content_type)
    loop_answer = json.loads(raw)
    assert status == resp.status_code, (status, raw, resp.get_data())
    if status == 202:
        assert len(loop_answer["ids"]) == len(answer["ids"])
    else:
        assert loop_answer == answer
        assert journal.count(redis, "queued", "parked") == before, "a refused request left something behind"


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=tags, body=st.binary(max_size=300), content_type=content_types)
def test_random_bytes_never_break_the_ingress(bus, tag, body, content_type):
    _check(_apps(bus), tag, body, content_type)


@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tag=tags, value=json_values, ndjson=st.booleans())
def test_random_json_never_breaks_the_ingress(bus, tag, value, ndjson):
    if ndjson and isinstance(value, list):
        body = b"\n".join(json.dumps(v).encode() for v in value)
        _check(_apps(bus), tag, body, "application/x-ndjson")
    else:
        _check(_apps(bus), tag, json.dumps(value).encode(), "application/json")

