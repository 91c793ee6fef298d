"""quiet_server.DatedState: the default headers carry the Date of the second they are read in, and are
a new list only when that second changes (guarded_protocol._fields keeps its joined bytes per list)."""
from __future__ import annotations

import uvicorn

from bus.ingress import quiet_server


def test_the_default_headers_are_one_list_per_second_dated_with_it(monkeypatch):
    config = uvicorn.Config("bus.ingress.asgi:from_environment", headers=[("x-content-type-options", "nosniff")])
    config.load()
    state = quiet_server.DatedState(config)
    clock = [1_700_000_000.2]
    monkeypatch.setattr(quiet_server.time, "time", lambda: clock[0])
    first = state.default_headers
    assert first[0] == (b"date", b"Tue, 14 Nov 2023 22:13:20 GMT")
    assert (b"x-content-type-options", b"nosniff") in first
    clock[0] += 0.5
    assert state.default_headers is first
    clock[0] += 0.5
    later = state.default_headers
    assert later is not first and later[0] == (b"date", b"Tue, 14 Nov 2023 22:13:21 GMT")
    assert later[1:] == first[1:]
    state.default_headers = []  # uvicorn's on_tick assigns it: ignored
    assert state.default_headers is later
