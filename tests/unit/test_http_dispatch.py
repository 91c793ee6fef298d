"""The ingress's dispatch: the URL map and its handler table agree, the event loop takes only event posts,
and what it builds (Redis commands, journaled headers) is what the WSGI path would."""
from __future__ import annotations

import orjson
import pytest

from bus.ingress import http, request_parts
from bus.wire.pipelined import pack


def test_every_url_rule_has_a_handler_and_every_handler_a_rule():
    assert set(http.HANDLERS) == {rule.endpoint for rule in http.URLS.iter_rules()}


PATHS = ["/api.x", "/a.b.c", "/healthz", "/metrics", "/stats", "/console", "/console/console.js", "/console/x",
         "/events", "/events/replay", "/events/0192", "/events/a/b", "/", "/api.x/", "/x/y", "/consoles",
         "/eventsx", "/events/replay/", "/events/replayx", "/\u00e9t\u00e9", "//x", "///", "/a//b", "/0\n", "/a\nb", "/a\rb", "/ "]


@pytest.mark.parametrize("path", PATHS)
def test_the_event_loop_answers_exactly_the_posts_the_url_map_sends_to_post_events(path):
    from werkzeug.exceptions import HTTPException

    try:
        endpoint = http.URLS.bind("bus").match(path, "POST")[0]
    except HTTPException:
        endpoint = None
    if "//" not in path and "\n" not in path and "\r" not in path:
        assert http.is_event_post("POST", path) == (endpoint == "post_events"), (path, endpoint)
    if not http.is_event_post("POST", path):
        assert endpoint != "post_events"
    assert not http.is_event_post("GET", path)


@pytest.mark.parametrize("path", ["//api.x", "/api.x\n", "/api.x/", "/a\rb"])
def test_a_post_to_a_path_that_is_no_tag_is_an_event_post_with_that_bad_tag(path):
    endpoint, args = http.match_request("POST", path)
    assert (endpoint, args["tag"]) == ("post_events", path[1:]), "never merged, never another path"
    assert http.match_request("POST", "/events/replay")[0] == "replay_events"


def test_commands_are_packed_as_resp():
    assert pack(("SET", "k", b"v\r\n", 5, 1.5)) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nv\r\n\r\n$1\r\n5\r\n$3\r\n1.5\r\n"
    assert pack(("ECHO", "été")) == b"*2\r\n$4\r\nECHO\r\n$5\r\n\xc3\xa9t\xc3\xa9\r\n"
    with pytest.raises(TypeError):
        pack(("SET", "k", True))
    with pytest.raises(TypeError):
        pack(("SET", "k", None))


def test_headers_reach_the_journal_spelled_as_werkzeug_spells_them():
    scope = {"headers": [(b"content-type", b"application/json"), (b"x-request-id", b"r1"), (b"x-tag", b"a"),
                         (b"x-tag", b"b"), (b"authorization", b"Bearer s")],
             "query_string": b"time=1&json=%7B%7D&time=2"}
    headers = request_parts.headers_of(scope["headers"])
    assert headers == {"Content-Type": "application/json", "X-Request-Id": "r1", "X-Tag": "a,b",
                       "Authorization": "Bearer s"}
    assert orjson.loads(http.received_headers(headers.items())) == {"Content-Type": "application/json",
                                                                    "X-Request-Id": "r1", "X-Tag": "a,b"}
    assert request_parts.query_of(scope["query_string"]) == {"time": "1", "json": "{}"}
