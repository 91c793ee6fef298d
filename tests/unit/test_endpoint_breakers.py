"""What a breaker is keyed by, and how failing endpoints are shown: pure, no Redis."""
from __future__ import annotations

from prometheus_client.core import Metric

from bus import endpoints, metrics, stats


def test_the_breaker_key_is_the_rendered_origin_and_path_without_credentials_or_query():
    a = endpoints.key_for("api", "http://user:pw@Svc.example:8000/api/orders/?token=secret")
    assert a.endpoint == "http://svc.example:8000/api/orders/"
    assert a == endpoints.key_for("api", "http://svc.example:8000/api/orders/?token=other")
    assert a.digest != endpoints.key_for("api", "http://svc.example:8000/api/users/").digest
    assert a.digest != endpoints.key_for("api", "https://svc.example:8000/api/orders/").digest
    assert a.digest != endpoints.EndpointKey("api", a.endpoint, destination="audit").digest, \
        "a destination of its own, a breaker of its own"
    assert endpoints.endpoint_of("http://svc") == "http://svc/"


def test_every_path_of_an_origin_shares_its_origin_breaker_and_no_path_is_taken_for_it():
    orders = endpoints.key_for("api", "http://svc.example:8000/api/orders/")
    users = endpoints.key_for("api", "http://svc.example:8000/api/users/")
    root = endpoints.key_for("api", "http://svc.example:8000/")
    assert orders.origin == users.origin == root.origin
    assert orders.origin.endpoint == "http://svc.example:8000" and endpoints.is_origin(orders.origin.endpoint)
    assert root.origin.digest != root.digest and not endpoints.is_origin(root.endpoint), "/ is a path of its own"
    assert orders.origin != endpoints.key_for("api", "http://svc.example:8001/api/orders/").origin
    assert endpoints.EndpointKey("api", orders.endpoint, "audit").origin.destination == "audit"


def failing_route(n: int, now: float) -> stats.RouteStats:
    listed = [stats.EndpointStats(f"http://svc/api/e{i}/", "path", now - 100 + i, 5 + i, "open", now + 1, i, 3.0)
              for i in range(min(n, 100))]
    return stats.RouteStats("api", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, "failing", listed[0].failing_since, n, n,
                            listed)


def test_bus_stats_lists_ten_failing_endpoints_a_route_and_says_how_many_more():
    now = 1_800_000_000.0
    rows = stats.endpoint_table([failing_route(25, now)], now)
    assert rows[0] == ("ROUTE", "FAILING ENDPOINT", "SINCE", "FAILURES", "BREAKER", "HELD BACK")
    assert [r[1] for r in rows[1:11]] == [f"http://svc/api/e{i}/" for i in range(10)]
    assert rows[1][2:] == ("2027-01-15 07:58:20Z (1m40s ago)", "5", "open", "0")
    assert rows[2][5] == "1 (oldest 3s)"
    assert rows[11][1] == "... and 15 more"


def test_bus_stats_names_an_origin_breaker_as_every_path_of_a_host_that_takes_no_connection():
    now = 1_800_000_000.0
    whole = stats.EndpointStats("http://svc:8000", "origin", now - 10, 5, "open", now + 1, 40, 9.0)
    route = stats.RouteStats("api", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, None, "failing", now - 10, 1, 1, [whole])
    assert stats.endpoint_table([route], now)[1][1] == "http://svc:8000 (every path: no connection)"
    assert stats.endpoint_table([], now) == []
    assert stats.endpoint_text(failing_route(25, now), now) == \
        "25 endpoints failing, the first since 2027-01-15 07:58:20Z (1m40s ago)"


def samples(families: list[Metric], name: str) -> list[dict[str, str]]:
    return [s.labels for f in families for s in f.samples if s.name == name]


def test_metrics_label_at_most_twenty_failing_endpoints_a_route_and_count_them_all():
    families = list(metrics._gauges([failing_route(150, 1_800_000_000.0)]))
    assert len(samples(families, "bus_breaker_open")) == metrics.METRICS_ENDPOINTS == 20
    assert samples(families, "bus_endpoint_failing")[0] == {"route": "api", "endpoint": "http://svc/api/e0/"}
    (count,) = [s for f in families for s in f.samples if s.name == "bus_endpoints_failing"]
    assert count.value == 150
