"""`ordered = true` and `order_key` in route files, and the accept-time check of the order key (issue 19)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from bus import intake
from bus.errors import InvalidBody
from routekit import MINIMAL, broken, load, write


def router_with(tmp_path, extra: str):
    write(tmp_path, "orders.toml", 'match = "orders.*"\nendpoint = "http://svc.example/in"\n' + extra)
    return load(tmp_path)


def test_a_route_is_unordered_unless_it_says_ordered_true(tmp_path):
    write(tmp_path, "plain.toml", MINIMAL)
    route = load(tmp_path).by_name["plain"]
    assert (route.ordered, route.order_key, route.order) == (False, None, "")


def test_an_ordered_route_keys_by_the_tag_unless_order_key_names_a_field(tmp_path):
    assert router_with(tmp_path, "ordered = true\n").by_name["orders"].order == "tag"
    assert router_with(tmp_path, 'ordered = true\norder_key = "order_id"\n').by_name["orders"].order == "field:order_id"


def test_order_key_without_ordered_true_is_refused_naming_what_to_add(tmp_path):
    message = broken(tmp_path, 'match = "x.*"\nendpoint = "http://svc.example/in"\norder_key = "order_id"\n')
    assert "key 'order_key'" in message and "add ordered = true" in message


@pytest.mark.parametrize("value", ['""', "3", '"a b"', "true"])
def test_an_order_key_that_is_not_a_field_name_is_refused(tmp_path, value):
    message = broken(tmp_path, f'match = "x.*"\nendpoint = "http://svc.example/in"\nordered = true\norder_key = {value}\n')
    assert "key 'order_key'" in message and "top-level record field" in message


def test_ordered_must_be_true_or_false(tmp_path):
    message = broken(tmp_path, 'match = "x.*"\nendpoint = "http://svc.example/in"\nordered = "yes"\n')
    assert "key 'ordered'" in message and "true or false" in message


def test_events_carrying_their_order_key_as_a_string_number_or_boolean_are_accepted(tmp_path):
    ways_in = SimpleNamespace(router=router_with(tmp_path, 'ordered = true\norder_key = "order_id"\n'))
    prepared = intake.prepare(ways_in, "orders.paid", [{"order_id": "A-1"}, {"order_id": 7}, {"order_id": True}])
    assert len(prepared.events) == 3


@pytest.mark.parametrize("record, found", [({"n": 1}, "has no field 'order_id'"),
                                           ({"order_id": None}, "has null in field 'order_id'"),
                                           ({"order_id": {"a": 1}}, "has an object in field 'order_id'")])
def test_an_event_without_a_usable_order_key_is_refused_whole_naming_the_field(tmp_path, record, found):
    ways_in = SimpleNamespace(router=router_with(tmp_path, 'ordered = true\norder_key = "order_id"\n'))
    with pytest.raises(InvalidBody) as refused:
        intake.prepare(ways_in, "orders.paid", [{"order_id": "A-1"}, record])
    assert f"item 1 {found}" in str(refused.value) and "ordered route orders" in str(refused.value)


def test_an_ordered_fan_out_route_keeps_the_order_per_destination(tmp_path):
    write(tmp_path, "api.toml", 'match = "api.*"\nordered = true\norder_key = "order_id"\n'
                                '[[destinations]]\nname = "orders"\nendpoint = "http://orders.example/in"\n'
                                '[[destinations]]\nname = "audit"\nendpoint = "http://audit.example/in"\n')
    route = load(tmp_path).fanouts["api"]
    # Each destination is a route of its own name, so its lanes (bus:lane:<its name>:...) are its own.
    assert [(d.name, d.order) for d in route.destinations] == [(d.name, "field:order_id") for d in route.destinations]
    assert len({d.name for d in route.destinations}) == 2
