"""Retry delays (SPEC.md, "Delivery"): exponential backoff from 1 s doubling up to
retry_max_interval, with jitter in [d/2, d], honouring Retry-After."""
from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from bus.worker import backoff
from bus.worker.backoff import FIRST_DELAY, delay, parse_retry_after


class Fixed:
    """A stand-in for random.Random whose random() always returns one value."""

    def __init__(self, value: float):
        self.value = value

    def random(self) -> float:
        return self.value


LOWEST = Fixed(0.0)  # random() can return 0.0
HIGHEST = Fixed(1.0 - 2**-53)  # the largest value random() can return


def base(attempt: int, max_interval: float) -> float:
    return min(FIRST_DELAY * 2 ** (attempt - 1), max_interval)


# --------------------------------------------------------------------------- exponential growth

def test_first_delay_is_about_one_second():
    assert FIRST_DELAY == 1.0
    assert delay(1, 60, rng=LOWEST) == 0.5
    assert delay(1, 60, rng=HIGHEST) == pytest.approx(1.0)


def test_delay_doubles_each_attempt():
    lows = [delay(n, 1000, rng=LOWEST) for n in range(1, 9)]
    assert lows == [0.5, 1, 2, 4, 8, 16, 32, 64]
    highs = [delay(n, 1000, rng=HIGHEST) for n in range(1, 9)]
    assert highs == pytest.approx([1, 2, 4, 8, 16, 32, 64, 128])


def test_delay_caps_at_max_interval():
    # 1, 2, 4, ..., 32, then 60 forever with the default retry_max_interval.
    assert [delay(n, 60, rng=HIGHEST) for n in range(1, 10)] == pytest.approx([1, 2, 4, 8, 16, 32, 60, 60, 60])
    assert delay(50, 60, rng=LOWEST) == 30
    assert delay(50, 60, rng=HIGHEST) == pytest.approx(60)


@pytest.mark.parametrize("max_interval", [1, 5, 60, 600, 86400])
def test_delay_never_exceeds_max_interval(max_interval):
    rng = random.Random(7)
    for attempt in range(1, 200):
        assert delay(attempt, max_interval, rng=rng) <= max_interval


def test_attempt_zero_or_below_is_treated_as_the_first():
    assert delay(0, 60, rng=LOWEST) == delay(1, 60, rng=LOWEST) == 0.5
    assert delay(-3, 60, rng=LOWEST) == 0.5


@pytest.mark.parametrize("attempt", [1025, 5000, 10**6])
def test_delay_stays_capped_after_very_many_attempts(attempt):
    # An endpoint down for a day: retries go on forever, at retry_max_interval.
    assert 30 <= delay(attempt, 60, rng=random.Random(1)) <= 60


def test_delay_is_fine_up_to_attempt_1024():
    assert 30 <= delay(1024, 60, rng=random.Random(1)) <= 60


# --------------------------------------------------------------------------- jitter

@pytest.mark.parametrize("max_interval", [1, 60, 3600])
def test_jitter_stays_within_half_to_full_delay(max_interval):
    rng = random.Random(20240601)
    for attempt in range(1, 25):
        d = base(attempt, max_interval)
        samples = [delay(attempt, max_interval, rng=rng) for _ in range(300)]
        assert min(samples) >= d / 2
        assert max(samples) <= d


def test_jitter_spreads_delays_out():
    rng = random.Random(42)
    samples = [delay(6, 60, rng=rng) for _ in range(2000)]  # d = 32
    assert len(set(samples)) > 1900
    assert min(samples) < 16 * 1.05  # reaches the low end ...
    assert max(samples) > 32 * 0.95  # ... and the high end
    mean = sum(samples) / len(samples)
    assert 23 < mean < 25  # uniform on [16, 32]


def test_jitter_is_never_zero():
    rng = random.Random(0)
    assert all(delay(n, 60, rng=rng) >= 0.5 for n in range(1, 40) for _ in range(200))
    assert delay(1, 60, rng=LOWEST) > 0


def test_jitter_uses_the_global_random_when_no_rng_is_given():
    random.seed(3)
    first = delay(5, 60)
    random.seed(3)
    assert delay(5, 60) == first
    assert 8 <= first <= 16


def test_seeded_rng_makes_delays_reproducible():
    a = [delay(n, 60, rng=random.Random(99)) for n in range(1, 12)]
    b = [delay(n, 60, rng=random.Random(99)) for n in range(1, 12)]
    assert a == b


# --------------------------------------------------------------------------- Retry-After

def test_retry_after_wins_over_the_computed_delay():
    assert delay(1, 60, retry_after=17, rng=LOWEST) == 17
    assert delay(9, 60, retry_after=3, rng=HIGHEST) == 3


def test_retry_after_is_not_jittered():
    rng = random.Random(5)
    assert {delay(3, 60, retry_after=10, rng=rng) for _ in range(50)} == {10}


def test_retry_after_is_capped_at_max_interval():
    assert delay(1, 60, retry_after=3600) == 60
    assert delay(1, 600, retry_after=3600) == 600
    assert delay(1, 60, retry_after=float("inf")) == 60


@pytest.mark.parametrize("retry_after", [0, 0.0, 0.2, -5])
def test_retry_after_is_floored_at_one_second(retry_after):
    assert delay(1, 60, retry_after=retry_after) == 1


@pytest.mark.parametrize(
    "header,seconds",
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 30 ", 30.0),
        ("86400", 86400.0),
    ],
    ids=repr,
)
def test_retry_after_delta_seconds(header, seconds):
    assert parse_retry_after(header) == seconds


NOW = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "header,seconds",
    [
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:28:45 GMT", 45.0),
        ("Wed, 21 Oct 2015 08:28:00 GMT", 3600.0),
        ("Wed, 21 Oct 2015 09:28:00 +0100", 3600.0),  # zone offsets are honoured
        ("Wednesday, 21-Oct-15 07:29:00 GMT", 60.0),  # RFC 850, obsolete but valid
        ("Wed Oct 21 07:30:00 2015", 120.0),  # asctime, obsolete but valid
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: no negative wait
        ("Tue, 20 Oct 2015 07:28:00 GMT", 0.0),
    ],
    ids=repr,
)
def test_retry_after_http_date(header, seconds):
    assert parse_retry_after(header, now=NOW) == pytest.approx(seconds)


def test_retry_after_http_date_defaults_to_now():
    when = datetime.now(UTC) + timedelta(seconds=90)
    header = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 85 <= parse_retry_after(header) <= 90


@pytest.mark.parametrize(
    "header",
    [None, "", "   ", "soon", "-1", "+5", "1.5", "1e3", "0x10", "Wed, 32 Oct 2015 07:28:00 GMT", "12 apples"],
    ids=repr,
)
def test_unreadable_retry_after_is_none(header):
    assert parse_retry_after(header, now=NOW) is None


@pytest.mark.parametrize("header", ["²", "¹", "³0"], ids=repr)
def test_retry_after_with_superscript_digits_is_unreadable_not_an_error(header):
    assert parse_retry_after(header, now=NOW) is None


def test_retry_after_date_then_delay_caps_and_floors():
    far = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW)
    assert delay(1, 60, retry_after=far) == 60
    past = parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now=NOW)
    assert delay(1, 60, retry_after=past) == 1


def test_breaker_knobs_are_as_documented():
    assert backoff.BREAKER_THRESHOLD == 5
    assert backoff.BREAKER_MAX_INTERVAL == 2.5
