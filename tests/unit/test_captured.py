"""The capture proxy's header rules and replay targets (bus/captured.py), without servers."""
from __future__ import annotations

from bus import captured


def test_hop_by_hop_headers_and_those_connection_names_are_not_passed_on():
    headers = [("Connection", "keep-alive, X-Trace"), ("Keep-Alive", "timeout=5"), ("X-Trace", "1"),
               ("Transfer-Encoding", "chunked"), ("TE", "trailers"), ("Upgrade", "h2c"),
               ("Proxy-Authorization", "Basic x"), ("X-Custom", "kept"), ("Content-Type", "text/plain")]
    assert captured.end_to_end(headers) == [("X-Custom", "kept"), ("Content-Type", "text/plain")]


def test_credentials_are_kept_for_replay_only_when_named():
    headers = [("authorization", "Bearer s"), ("cookie", "a=1"), ("x-custom", "v"), ("content-length", "3"),
               ("x-request-id", "client-id"), ("host", "api")]
    assert captured.for_replay(headers) == [("x-custom", "v")]
    assert captured.for_replay(headers, frozenset({"authorization"})) == [("authorization", "Bearer s"),
                                                                        ("x-custom", "v")]


def test_listings_show_a_kept_credential_redacted():
    request = captured.Request("PUT", "/a", "", (("authorization", "Bearer s"), ("x-custom", "v")))
    assert captured.shown(request)["headers"] == [["authorization", "[redacted]"], ["x-custom", "v"]]


def test_a_request_survives_its_journal_json_unchanged():
    request = captured.Request("PATCH", "/orders/7", "a=1&a=2", (("x-a", "1"), ("x-a", "2")))
    assert captured.Request.from_json(request.to_json()) == request


def test_replay_goes_to_the_base_urls_origin_and_path_prefix_with_the_requests_path_and_query():
    request = captured.Request("GET", "/orders", "id=7", ())
    assert captured.target("http://staging:8000", request) == "http://staging:8000/orders?id=7"
    assert captured.target("http://staging:8000/v2/", request) == "http://staging:8000/v2/orders?id=7"
    assert captured.target("http://up/x", captured.Request("GET", "/", "", ())) == "http://up/x/"


def test_replayed_headers_carry_the_same_request_id_and_join_repeated_fields():
    request = captured.Request("POST", "/", "", (("x-a", "1"), ("x-a", "2"), ("accept-encoding", "gzip")))
    assert captured.replay_headers(request, "id-1", {"X-Bus-Replay": "copy"}) == {
        "X-A": "1, 2", "X-Request-Id": "id-1", "X-Bus-Replay": "copy"}
