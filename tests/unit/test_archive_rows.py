"""The archive's pure parts: a tag pattern narrowed to what an index can answer, copies appended."""
from __future__ import annotations

import pytest

from bus.archive.rows import Scan, _tag_bounds, append_copy, scan_for, where
from bus.filters import EventFilter


@pytest.mark.parametrize("pattern, bounds", [
    ("api.orders", ("api.orders", None)),
    ("api.*", (None, "api")),
    ("api.**", (None, "api")),  # 'api.**' matches 'api' itself: the dot is not part of the start
    ("api.ord*", (None, "api.ord")),
    ("{api,web}.*", (None, None)),
    ("**.error", (None, None)),
    (None, (None, None)),
])
def test_a_tag_pattern_is_narrowed_to_its_literal_start(pattern, bounds):
    assert _tag_bounds(pattern) == bounds


def test_every_tag_a_pattern_matches_is_inside_its_index_range():
    f = EventFilter(tag="api.**")
    _, prefix = _tag_bounds(f.tag)
    for tag in ("api", "api.orders", "api.a-b_c.Z9"):
        assert f.matches_tag(tag) and prefix <= tag < prefix + "\x7f"


def test_where_binds_every_value_as_a_parameter():
    clause, params = where(Scan(limit=5, after=(12.5, "id-1"), routes=("api",), since=1.0, until=20.0,
                                tag_prefix="api"), "?")
    assert clause.count("?") == len(params) == 8
    assert "api" not in clause and params[:3] == [12.5, 12.5, "id-1"]


def test_a_fan_out_routes_scan_reads_each_destinations_rows():
    clause, params = where(scan_for(EventFilter(route="api", copies_of=("api.a", "api.b")), 5, None), "?")
    assert "route IN (?, ?)" in clause and params == ["api.a", "api.b"]


def test_copies_are_appended_to_the_json_array():
    assert append_copy(b"[]", b'{"a":1}') == b'[{"a":1}]'
    assert append_copy(b'[{"a":1}]', b'{"b":2}') == b'[{"a":1},{"b":2}]'
