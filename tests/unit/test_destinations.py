"""Routes with several destinations (SPEC.md, "Fan-out and order"): what a route file may say, and what it means."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bus import cli, fanout
from bus.broker.celery_checks import check_fanout_layout
from bus.errors import BadFilter, ConfigError, NoRoute, RouteError
from bus.routes import copy_id, event_id, load_routes

VISIBILITY = 60
TWO = """
match = "api.*"
retry_max_interval = 30
headers = { X-Team = "core" }

[[destinations]]
name = "orders"
endpoint = "http://orders.example/api/${tag[1]}/"

[[destinations]]
name = "audit"
endpoint = "http://audit.example/in"
method = "PUT"
max_attempts = 3
headers = { X-Team = "audit" }
"""


def load(tmp_path: Path, text: str, name: str = "api.toml"):
    (tmp_path / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return load_routes(tmp_path, VISIBILITY)


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(RouteError) as exc:
        load(tmp_path, text)
    return str(exc.value)


def test_each_destination_is_a_route_of_its_own_with_the_route_s_keys_as_defaults(tmp_path):
    router = load(tmp_path, TWO)
    route = router.match("api.orders")
    assert route.name == "api" and [d.destination for d in route.destinations] == ["orders", "audit"]
    orders, audit = route.destinations
    assert orders.name == "api.orders" and audit.name == "api.audit"
    assert orders.endpoint.render("api.x") == "http://orders.example/api/x/"
    assert (orders.method, orders.max_attempts, orders.retry_max_interval) == ("POST", None, 30.0)
    assert (audit.method, audit.max_attempts, audit.retry_max_interval) == ("PUT", 3, 30.0)
    assert orders.headers == {"X-Team": "core"} and audit.headers == {"X-Team": "audit"}
    # Workers deliver per destination: each has its own queue, schedule and breakers.
    assert [r.name for r in router.routes] == ["api.orders", "api.audit"]
    assert router.by_name["api.audit"] is audit and "api" not in router.by_name


def test_a_route_with_one_endpoint_stays_as_it_was(tmp_path):
    router = load(tmp_path, 'match = "api.*"\nendpoint = "http://svc.example/in"\n')
    route = router.match("api.x")
    assert route.destinations == () and route.destination == "" and router.routes == [route]
    assert router.fanouts == {}


def test_a_tag_that_one_destination_cannot_render_is_refused_at_accept(tmp_path):
    router = load(tmp_path, TWO.replace('"http://audit.example/in"', '"http://audit.example/${tag[2]}"'))
    with pytest.raises(NoRoute, match=r"no part \[2\]"):
        router.accepting("api.orders")


@pytest.mark.parametrize("text, says", [
    ('match = "a.*"\ndestinations = []\n', "key 'destinations': expected one or more [[destinations]] tables"),
    ('match = "a.*"\ndestinations = "http://x/"\n', "key 'destinations': expected one or more"),
    ('match = "a.*"\nendpoint = "http://x/"\n[[destinations]]\nname = "a"\nendpoint = "http://y/"\n',
     "key 'endpoint': a route with destinations has an endpoint in each [[destinations]] table"),
    ('match = "a.*"\n[[destinations]]\nendpoint = "http://y/"\n', "destination 1: key 'name' is required"),
    ('match = "a.*"\n[[destinations]]\nname = "a.b"\nendpoint = "http://y/"\n', "destination 1 ('a.b'): key 'name'"),
    ('match = "a.*"\n[[destinations]]\nname = "a"\n', "destination 1 ('a'): key 'endpoint' is required"),
    ('match = "a.*"\n[[destinations]]\nname = "a"\nendpoint = "http://y/"\n'
     '[[destinations]]\nname = "a"\nendpoint = "http://z/"\n', "destination 2 ('a'): key 'name': another destination"),
    ('match = "a.*"\n[[destinations]]\nname = "a"\nendpoint = "http://y/"\nshard = "b"\n',
     "destination 1 ('a'): key 'shard' belongs to the route, not to one destination"),
    ('match = "a.*"\n[[destinations]]\nname = "a"\nendpoint = "ftp://y/"\n',
     "destination 1 ('a'): key 'endpoint': 'ftp://y/' is not an http:// or https:// URL"),
    ('match = "a.*"\n[[destinations]]\nname = "a"\nendpoint = "http://y/"\nretries = 3\n',
     "destination 1 ('a'): unknown key 'retries'"),
    ('match = "a.*"\n[[destinations]]\nname = "a"\nendpoint = "http://y/"\nread_timeout = 55\n',
     "destination 1 ('a'): key 'read_timeout': open_timeout + read_timeout"),
])
def test_a_bad_destination_is_refused_naming_the_file_the_destination_and_the_key(tmp_path, text, says):
    message = refused(tmp_path, text)
    assert message.startswith(str(tmp_path / "api.toml")) and says in message


def test_too_many_destinations_are_refused(tmp_path):
    tables = "".join(f'[[destinations]]\nname = "d{i}"\nendpoint = "http://y/{i}"\n' for i in range(17))
    assert "17 destinations, at most 16 per route" in refused(tmp_path, 'match = "a.*"\n' + tables)


def test_a_destination_s_copy_of_an_event_has_an_id_that_leads_back_to_the_event():
    event = "0190b7c4-8f3e-7a21-9c44-5d2e8f6a7b10"
    assert copy_id(event, "audit") == f"{event}.audit" and event_id(copy_id(event, "audit")) == event
    assert event_id(event) == event


@pytest.mark.parametrize("statuses, status", [
    (["delivered", "delivered"], "delivered"),
    (["delivered", "retrying"], "retrying"),
    (["queued", "dead"], "queued"),
    (["retrying", "queued"], "retrying"),
    (["delivered", "dead"], "dead"),
])
def test_the_event_s_status_is_derived_from_its_destinations(statuses, status):
    assert fanout.overall(statuses) == status


def test_replay_destination_names_one_destination_s_route_or_says_what_is_wrong(tmp_path):
    router = load(tmp_path, TWO)
    (tmp_path / "zz-plain.toml").write_text('match = "b.*"\nendpoint = "http://b.example/"\n')
    router = load_routes(tmp_path, VISIBILITY)
    assert fanout.destination_route(router, None, "audit") == "api.audit"
    assert fanout.destination_route(router, "api", "orders") == "api.orders"
    assert fanout.destination_route(router, "zz-plain", None) == "zz-plain"
    with pytest.raises(BadFilter, match="no destination 'nope' in route 'api'; destinations are: api.orders, api.audit"):
        fanout.destination_route(router, "api", "nope")
    with pytest.raises(BadFilter, match="route 'zz-plain' has no destinations"):
        fanout.destination_route(router, "zz-plain", "audit")


def test_a_worker_refuses_to_start_while_events_of_the_route_s_old_single_endpoint_wait(tmp_path):
    router = load(tmp_path, TWO)
    with pytest.raises(ConfigError) as exc:
        check_fanout_layout(router, {"api": 7}.get)
    assert "route api now has [[destinations]], but 7 events accepted while it had one endpoint" in str(exc.value)
    assert "bus purge --route api --status queued --status retrying --yes" in str(exc.value)
    check_fanout_layout(router, {"api": 0}.get)  # nothing waits: it starts


def test_a_worker_given_a_fan_out_route_takes_all_its_destinations_and_one_destination_alone(tmp_path):
    router = load(tmp_path, TWO)
    assert [r.name for r in router.named(["api"])] == ["api.orders", "api.audit"]
    assert [r.name for r in router.named(["api.audit", "api"])] == ["api.audit", "api.orders"]
    with pytest.raises(ValueError, match="no route named 'apx'; routes are: api, api.orders, api.audit"):
        router.named(["apx"])


def test_bus_routes_with_a_bad_destination_exits_1_naming_the_file_and_the_destination(tmp_path, monkeypatch, capsys):
    (tmp_path / "api.toml").write_text('match = "a.*"\n[[destinations]]\nname = "audit"\nendpoint = "nope"\n')
    monkeypatch.setenv("BUS_ROUTES", str(tmp_path))
    assert cli.main(["routes"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'api.toml'}: destination 1 ('audit'): key 'endpoint': 'nope' is not an http://" in err


def test_bus_events_destination_with_routes_that_do_not_load_exits_1_saying_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "api.toml").write_text('match = 5\n')
    monkeypatch.setenv("BUS_ROUTES", str(tmp_path))
    monkeypatch.setenv("BUS_REDIS_URL", "redis://127.0.0.1:1/0")  # never reached: the filter is refused first
    assert cli.main(["events", "--destination", "audit"]) == 1
    assert "--destination audit: the routes in BUS_ROUTES do not load" in capsys.readouterr().err


def test_bus_routes_lists_each_destination_as_a_row_of_its_own(tmp_path, monkeypatch, capsys):
    (tmp_path / "api.toml").write_text(textwrap.dedent(TWO))
    monkeypatch.setenv("BUS_ROUTES", str(tmp_path))
    assert cli.main(["routes"]) == 0
    out = capsys.readouterr().out
    assert "api.orders" in out and "http://orders.example/api/${tag[1]}/" in out
    assert "api.audit" in out and "PUT" in out and "http://audit.example/in" in out


def test_bus_proxy_refuses_a_tag_of_a_fan_out_route(tmp_path):
    from bus import intake, settings
    from bus.ingress import capture

    (tmp_path / "api.toml").write_text(textwrap.dedent(TWO))
    config = settings.load({"BUS_ROUTES": str(tmp_path), "BUS_REDIS_URL": "redis://127.0.0.1:1/0"})
    with pytest.raises(ConfigError, match="route api, which has several destinations: bus proxy journals under a "
                                          "route with one endpoint"):
        capture.check(intake.load(config), capture.ProxyConfig("api.orders", "http://127.0.0.1:1"))
