"""Bad journal parameters get a 400 that names what is wrong, never a 500; the CLI says the same in one line."""
from __future__ import annotations

import pytest
import requests

from conftest import run_bus

NESTED_BRACES = "{" * 500 + "a" + "}" * 500

BAD_LISTINGS = [
    ({"cursor": "garbage"}, "cursor"),
    ({"cursor": "nan:x"}, "cursor"),
    ({"cursor": "inf:0190b7c4-8f3e-7a21-9c44-5d2e8f6a7b10"}, "cursor"),
    ({"cursor": "1.2.3:0190b7c4-8f3e-7a21-9c44-5d2e8f6a7b10"}, "cursor"),
    ({"tag": NESTED_BRACES}, "tag pattern"),
    ({"status": "lost"}, "status"),
    ({"since": "yesterday-ish"}, "since"),
    ({"limit": "0"}, "limit"),
]


@pytest.mark.parametrize("params,named", BAD_LISTINGS, ids=[next(iter(p)) + str(i) for i, (p, _) in
                                                             enumerate(BAD_LISTINGS)])
def test_a_bad_listing_parameter_is_refused_with_400_naming_it(bus, params, named):
    resp = requests.get(f"{bus.url}/events", params=params, timeout=10)
    assert resp.status_code == 400, resp.text
    assert named in resp.json()["error"]


BAD_REPLAYS = [
    ({"to": "http://[oops"}, "to"),
    ({"to": "http://127.0.0.1:notaport/"}, "to"),
    ({"to": 5}, "to"),
    ({"since": 5.5, "until": ["x"]}, "until"),
    ({"since": True}, "since"),
    ({"route": 5}, "route"),
    ({"status": ["dead"]}, "status"),
    ({"tag": NESTED_BRACES}, "tag pattern"),
    ({"stauts": "dead"}, "unknown replay field 'stauts'"),
]


@pytest.mark.parametrize("spec,named", BAD_REPLAYS, ids=[next(iter(s)) + str(i) for i, (s, _) in
                                                         enumerate(BAD_REPLAYS)])
def test_a_bad_replay_request_is_refused_with_400_naming_the_field(bus, spec, named):
    resp = requests.post(f"{bus.url}/events/replay", json=spec, timeout=10)
    assert resp.status_code == 400, resp.text
    assert named in resp.json()["error"]


def test_a_replay_since_given_as_unix_seconds_is_a_point_in_time_not_a_duration(bus):
    resp = requests.post(f"{bus.url}/events/replay", json={"since": 5, "dry_run": True, "tag": "api.nothing-here"},
                         timeout=10)
    assert resp.status_code == 200 and resp.json()["matched"] == 0, resp.text


def test_bus_events_with_a_garbled_cursor_exits_1_with_one_line(bus):
    done = run_bus(bus, "events", "--cursor", "garbage")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "cursor 'garbage' is not one this bus handed out" in done.stderr
