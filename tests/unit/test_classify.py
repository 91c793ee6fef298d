"""What an attempt's result means (SPEC.md, "Delivery"): 2xx delivered; connection errors,
timeouts and retryable_statuses retried (unless max_attempts); any other status dead at once."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from bus.routes import DEFAULT_RETRYABLE, Route, parse_endpoint
from bus.worker.classify import DEAD, DELIVERED, RETRY, Outcome, classify


def make_route(**settings) -> Route:
    return Route(name="api", file="routes/api.toml", match=("api.**",),
                 endpoint=parse_endpoint("http://svc.example/in"), **settings)


ROUTE = make_route()


@pytest.mark.parametrize("status", [200, 201, 202, 204, 206, 226, 299])
def test_2xx_is_delivered(status):
    assert classify(ROUTE, 1, status) == Outcome(DELIVERED)


def test_2xx_is_delivered_even_on_the_last_allowed_attempt():
    route = make_route(max_attempts=3)
    assert classify(route, 3, 200).verdict == DELIVERED
    assert classify(route, 99, 204).verdict == DELIVERED


@pytest.mark.parametrize("status", sorted(DEFAULT_RETRYABLE))
def test_default_retryable_statuses_retry(status):
    outcome = classify(ROUTE, 1, status)
    assert outcome.verdict == RETRY
    assert 0.5 <= outcome.delay <= 1


@pytest.mark.parametrize("status", [100, 199, 300, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 409,
                                    410, 413, 415, 422, 451, 499])
def test_other_statuses_are_dead_at_once(status):
    outcome = classify(ROUTE, 1, status)
    assert outcome.verdict == DEAD
    assert str(status) in outcome.reason
    assert "api" in outcome.reason


def test_redirects_are_never_followed_but_dead():
    # Following a 3xx would let the endpoint move data to another host.
    for status in (301, 302, 307, 308):
        assert classify(ROUTE, 1, status).verdict == DEAD


def test_network_error_or_timeout_retries():
    outcome = classify(ROUTE, 1, None)
    assert outcome.verdict == RETRY
    assert outcome.delay > 0


def test_network_errors_retry_forever_without_max_attempts():
    for attempt in (1, 10, 100, 1000):
        assert classify(ROUTE, attempt, None).verdict == RETRY
        assert classify(ROUTE, attempt, 503).verdict == RETRY


def test_retry_delay_grows_with_the_attempt_and_caps_at_retry_max_interval():
    random.seed(11)
    delays = [classify(ROUTE, n, 503).delay for n in range(1, 12)]
    for n, d in enumerate(delays, start=1):
        full = min(2 ** (n - 1), 60)
        assert full / 2 <= d <= full
    route = make_route(retry_max_interval=5)
    assert all(classify(route, n, None).delay <= 5 for n in range(1, 30))


def test_route_retryable_statuses_replace_the_defaults():
    route = make_route(retryable_statuses=frozenset({409, 503}))
    assert classify(route, 1, 409).verdict == RETRY
    assert classify(route, 1, 503).verdict == RETRY
    assert classify(route, 1, 500).verdict == DEAD
    assert classify(route, 1, 429).verdict == DEAD
    # A network error is always worth retrying, whatever the statuses.
    assert classify(route, 1, None).verdict == RETRY


def test_max_attempts_turns_a_retry_into_dead():
    route = make_route(max_attempts=3)
    assert classify(route, 1, 503).verdict == RETRY
    assert classify(route, 2, None).verdict == RETRY
    last = classify(route, 3, 503)
    assert last.verdict == DEAD
    assert "3" in last.reason and "max_attempts" in last.reason
    assert classify(route, 3, None).verdict == DEAD
    assert classify(route, 4, None).verdict == DEAD


def test_max_attempts_of_one_means_a_single_try():
    route = make_route(max_attempts=1)
    assert classify(route, 1, None).verdict == DEAD
    assert classify(route, 1, 200).verdict == DELIVERED


def test_non_retryable_status_is_dead_before_max_attempts_is_reached():
    route = make_route(max_attempts=10)
    outcome = classify(route, 1, 404)
    assert outcome.verdict == DEAD
    assert "404" in outcome.reason


def test_retry_after_seconds_is_honoured():
    assert classify(ROUTE, 1, 429, retry_after="17") == Outcome(RETRY, delay=17)
    assert classify(ROUTE, 1, 503, retry_after="17").delay == 17


def test_retry_after_http_date_is_honoured():
    when = datetime.now(UTC) + timedelta(seconds=40)
    outcome = classify(ROUTE, 1, 503, retry_after=when.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert outcome.verdict == RETRY
    assert 35 <= outcome.delay <= 40


def test_retry_after_is_capped_at_retry_max_interval():
    assert classify(ROUTE, 1, 503, retry_after="3600").delay == 60
    assert classify(make_route(retry_max_interval=600), 1, 503, retry_after="3600").delay == 600


def test_retry_after_is_floored_at_one_second():
    assert classify(ROUTE, 1, 429, retry_after="0").delay == 1
    assert classify(ROUTE, 1, 429, retry_after="Thu, 01 Jan 1970 00:00:00 GMT").delay == 1


def test_unreadable_retry_after_falls_back_to_backoff():
    outcome = classify(ROUTE, 4, 503, retry_after="later")
    assert outcome.verdict == RETRY
    assert 4 <= outcome.delay <= 8


def test_retry_after_does_not_rescue_a_non_retryable_status():
    assert classify(ROUTE, 1, 404, retry_after="5").verdict == DEAD


def test_retry_after_does_not_extend_max_attempts():
    assert classify(make_route(max_attempts=2), 2, 503, retry_after="5").verdict == DEAD


def test_network_errors_still_retry_after_a_day_of_attempts():
    # Retried forever: at the 60 s cap a day is ~1,440 attempts (more with the breaker's short probes).
    outcome = classify(ROUTE, 2000, None)
    assert outcome.verdict == RETRY
    assert 30 <= outcome.delay <= 60


def test_malformed_retry_after_with_superscript_digit_falls_back_to_backoff():
    outcome = classify(ROUTE, 1, 503, retry_after="²")
    assert outcome.verdict == RETRY
    assert 0.5 <= outcome.delay <= 1
