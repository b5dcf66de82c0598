"""The polling rules, as pure functions of state, response and now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aggregator.politeness import (
    Bounds,
    Hints,
    avoid_skipped,
    cache_lifetime,
    error_delay,
    error_wait,
    feed_bounds,
    hints_from_json,
    hints_to_json,
    next_check_after_error,
    next_check_after_success,
    parse_skip_days,
    parse_skip_hours,
    poll_interval,
    retry_after,
    stop_reason,
    syndication_seconds,
)

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # a Friday
BOUNDS = Bounds(default=1800, minimum=300, maximum=86400)


def test_default_interval_without_hints() -> None:
    assert poll_interval(BOUNDS, Hints(), {}, NOW) == 1800


@pytest.mark.parametrize(
    ("hints", "expected"),
    [
        (Hints(ttl_minutes=60), 3600),
        (Hints(ttl_minutes=5), 1800),  # a ttl shorter than our default does not make us poll more
        (Hints(update_period="hourly", update_frequency=2), 1800),
        (Hints(update_period="daily"), 86400),
        (Hints(update_period="weekly"), 86400),  # capped at max_interval
        (Hints(update_period="fortnightly"), 1800),  # unknown period: ignored
    ],
)
def test_document_hints(hints: Hints, expected: float) -> None:
    assert poll_interval(BOUNDS, hints, {}, NOW) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"cache-control": "public, max-age=7200"}, 7200.0),
        ({"cache-control": "max-age=60, s-maxage=9000"}, 9000.0),
        ({"cache-control": 'max-age="120"'}, 120.0),
        ({"expires": "Fri, 20 Nov 2026 14:00:00 GMT", "date": "Fri, 20 Nov 2026 12:00:00 GMT"}, 7200.0),
        ({"expires": "Fri, 20 Nov 2026 13:00:00 GMT"}, 3600.0),  # no Date: from now
        ({"expires": "0"}, 0.0),
        ({"cache-control": "no-cache"}, None),
        ({}, None),
    ],
)
def test_cache_lifetime(headers: dict[str, str], expected: float | None) -> None:
    assert cache_lifetime(headers, NOW) == expected


def test_cache_hints_lengthen_but_bounds_hold() -> None:
    assert poll_interval(BOUNDS, Hints(), {"cache-control": "max-age=7200"}, NOW) == 7200
    assert poll_interval(BOUNDS, Hints(), {"cache-control": "max-age=10"}, NOW) == 1800
    assert poll_interval(BOUNDS, Hints(), {"cache-control": "max-age=999999"}, NOW) == 86400
    tight = Bounds(default=60, minimum=600, maximum=900)
    assert poll_interval(tight, Hints(), {}, NOW) == 600


@pytest.mark.parametrize(
    ("value", "expected"),
    [("120", 120.0), ("Fri, 20 Nov 2026 12:30:00 GMT", 1800.0), ("Fri, 20 Nov 2026 11:00:00 GMT", 0.0), ("soon", None)],
)
def test_retry_after(value: str, expected: float | None) -> None:
    assert retry_after({"retry-after": value}, NOW) == expected
    assert retry_after({}, NOW) is None


def test_skip_hours_and_days_move_the_next_check() -> None:
    hints = Hints(skip_hours=frozenset({12, 13, 14}))
    assert avoid_skipped(NOW, hints, NOW + timedelta(days=1)) == NOW.replace(hour=15)
    weekend = Hints(skip_days=frozenset({5, 6}))  # Saturday, Sunday
    saturday = datetime(2026, 11, 21, 9, 30, tzinfo=UTC)
    assert avoid_skipped(saturday, weekend, saturday + timedelta(days=7)) == datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
    # never later than the latest allowed moment
    assert avoid_skipped(saturday, weekend, saturday + timedelta(hours=3)) == saturday + timedelta(hours=3)
    # a feed that skips every hour is ignoring its own hints
    assert avoid_skipped(NOW, Hints(skip_hours=frozenset(range(24))), NOW + timedelta(days=1)) == NOW


def test_next_check_after_success_combines_the_rules() -> None:
    hints = Hints(ttl_minutes=120, skip_hours=frozenset({14}))
    assert next_check_after_success(BOUNDS, hints, {}, NOW) == NOW.replace(hour=15)


def test_parse_skip_lists() -> None:
    assert parse_skip_hours(["0", "24", "7", "x", "99"]) == frozenset({0, 7})
    assert parse_skip_days(["Saturday", " sunday ", "Caturday"]) == frozenset({5, 6})
    assert parse_skip_days(None) == frozenset()
    assert syndication_seconds("Hourly", 0) == 3600


@given(st.integers(1, 10**6), st.integers(1, 200))
def test_error_delay_is_bounded_and_deterministic(feed_id: int, errors: int) -> None:
    delay = error_delay(feed_id, errors, BOUNDS)
    assert BOUNDS.minimum <= delay <= BOUNDS.maximum
    assert delay == error_delay(feed_id, errors, BOUNDS)


def test_error_delay_doubles_with_jitter() -> None:
    delays = [error_delay(7, n, BOUNDS) for n in range(1, 6)]
    for n, delay in enumerate(delays):
        assert delay == pytest.approx(300 * 2**n, rel=0.1)
    assert len({error_delay(i, 3, BOUNDS) for i in range(20)}) > 10  # spread across feeds


def test_retry_after_is_a_floor_on_error_back_off() -> None:
    assert next_check_after_error(1, 1, BOUNDS, NOW, wait=3600) == NOW + timedelta(seconds=3600)
    short = next_check_after_error(1, 1, BOUNDS, NOW, wait=1)
    assert short - NOW == timedelta(seconds=error_delay(1, 1, BOUNDS))
    assert next_check_after_error(1, 1, BOUNDS, NOW, wait=10**9) == NOW + timedelta(days=7)


def test_feed_bounds_override_the_settings() -> None:
    assert feed_bounds(1800, 300, 86400) == Bounds(1800, 300, 86400)
    assert feed_bounds(1800, 300, 86400, feed_minimum=60, feed_maximum=600) == Bounds(1800, 60, 600)
    # A feed's own bound wins over the settings' other one.
    assert feed_bounds(1800, 300, 86400, feed_minimum=2 * 86400) == Bounds(1800, 2 * 86400, 2 * 86400)
    assert feed_bounds(1800, 300, 86400, feed_maximum=120) == Bounds(1800, 120, 120)


def test_hints_survive_the_round_trip_through_storage() -> None:
    hints = Hints(ttl_minutes=90, skip_hours=frozenset({0, 23}), skip_days=frozenset({6}),
                  update_period="daily", update_frequency=3)
    assert hints_from_json(hints_to_json(hints)) == hints
    assert hints_to_json(Hints()) is None
    for broken in (None, "", "not json", "[]", '{"ttl": "x", "skip_hours": [99, true, 3], "period": 5}'):
        assert hints_from_json(broken) in (Hints(), Hints(skip_hours=frozenset({3})))


def test_retry_after_counts_on_429_and_503_only() -> None:
    headers = {"retry-after": "600"}
    assert error_wait(429, headers, NOW) == error_wait(503, headers, NOW) == 600.0
    assert error_wait(500, headers, NOW) is None and error_wait(None, headers, NOW) is None
    assert error_wait(429, {}, NOW) is None


def test_410_stops_polling() -> None:
    assert stop_reason(410) == "410 Gone: the publisher removed this feed; polling stopped"
    assert stop_reason(404) is None and stop_reason(None) is None
