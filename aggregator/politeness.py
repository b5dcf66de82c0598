"""When to poll a feed next: pure functions of the feed's state, the response
and ``now``.

A polite poller asks no more often than the publisher says it changes and
backs off when the publisher is in trouble. The rules, in order:

1. The interval starts at ``default_interval``.
2. Hints from the document lengthen it: RSS ``<ttl>`` (minutes) and
   ``<sy:updatePeriod>``/``<sy:updateFrequency>`` (the period divided by the
   frequency).
3. Cache hints of the response lengthen it: ``Cache-Control: max-age`` (or
   ``s-maxage``), else ``Expires`` minus the response's ``Date``.
4. The result is clamped to the feed's ``[min_interval, max_interval]``
   (per feed when set, else the settings').
5. The next check is moved out of RSS ``<skipHours>`` (UTC hours) and
   ``<skipDays>``, never past ``max_interval``.
6. After an error: exponential back-off from ``min_interval``, doubling with
   each consecutive error, capped at ``max_interval``, with +-10 % jitter
   derived from (feed id, error count) so the same inputs give the same
   answer and feeds that failed together do not retry together. A
   ``Retry-After`` (seconds or an HTTP date, on 429 and 503) is a floor.
7. ``410 Gone`` stops polling the feed (``stop_reason``) until an operator
   resumes it.

Per-feed bounds override the settings' (``feed_bounds``). A document's hints
are kept on the feed (``hints_to_json``/``hints_from_json``) so that a
``304 Not Modified``, which carries no document, still honours them.

Nothing here does I/O or reads the clock.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_PERIODS = {
    "hourly": 3600.0,
    "daily": 86400.0,
    "weekly": 7 * 86400.0,
    "monthly": 30 * 86400.0,
    "yearly": 365 * 86400.0,
}
RETRY_AFTER_STATUSES = frozenset({429, 503})
GONE = "410 Gone: the publisher removed this feed; polling stopped"
_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)\"?", re.I)


@dataclass(frozen=True)
class Bounds:
    """Seconds."""

    default: float
    minimum: float
    maximum: float


@dataclass(frozen=True)
class Hints:
    """What a document says about its own update rhythm."""

    ttl_minutes: int | None = None
    skip_hours: frozenset[int] = field(default_factory=frozenset)  # 0..23, UTC
    skip_days: frozenset[int] = field(default_factory=frozenset)  # 0 = Monday .. 6 = Sunday
    update_period: str | None = None  # sy:updatePeriod
    update_frequency: int | None = None  # sy:updateFrequency


def feed_bounds(
    default: float,
    minimum: float,
    maximum: float,
    *,
    feed_minimum: float | None = None,
    feed_maximum: float | None = None,
) -> Bounds:
    """The settings' bounds with a feed's own minimum/maximum (when set) in their
    place. A feed's own bound wins over the settings' other bound: a feed
    minimum of 2 days with the settings' maximum of 1 day polls every 2 days."""
    low = float(feed_minimum) if feed_minimum else float(minimum)
    high = float(feed_maximum) if feed_maximum else float(maximum)
    if low > high:
        if feed_maximum and not feed_minimum:
            low = high
        else:
            high = low
    return Bounds(default=float(default), minimum=low, maximum=high)


def hints_to_json(hints: Hints) -> str | None:
    """A compact JSON form of ``hints`` to keep on the feed; None when there are none."""
    data: dict[str, object] = {}
    if hints.ttl_minutes:
        data["ttl"] = hints.ttl_minutes
    if hints.skip_hours:
        data["skip_hours"] = sorted(hints.skip_hours)
    if hints.skip_days:
        data["skip_days"] = sorted(hints.skip_days)
    if hints.update_period:
        data["period"] = hints.update_period
    if hints.update_frequency:
        data["frequency"] = hints.update_frequency
    return json.dumps(data, separators=(",", ":"), sort_keys=True) if data else None


def hints_from_json(text: str | None) -> Hints:
    """The inverse of ``hints_to_json``; anything unreadable is no hints."""
    if not text:
        return Hints()
    try:
        data = json.loads(text)
    except ValueError:
        return Hints()
    if not isinstance(data, dict):
        return Hints()

    def integer(value: object) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    def numbers(value: object, top: int) -> frozenset[int]:
        items = value if isinstance(value, list) else []
        return frozenset(v for v in items if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= top)

    period = data.get("period")
    return Hints(
        ttl_minutes=integer(data.get("ttl")),
        skip_hours=numbers(data.get("skip_hours"), 23),
        skip_days=numbers(data.get("skip_days"), 6),
        update_period=period if isinstance(period, str) else None,
        update_frequency=integer(data.get("frequency")),
    )


def parse_skip_days(names: object) -> frozenset[int]:
    days = set()
    for name in names if isinstance(names, list | tuple | set | frozenset) else []:
        text = str(name).strip().lower()
        if text in DAY_NAMES:
            days.add(DAY_NAMES.index(text))
    return frozenset(days)


def parse_skip_hours(values: object) -> frozenset[int]:
    hours = set()
    for value in values if isinstance(values, list | tuple | set | frozenset) else []:
        try:
            hour = int(str(value).strip())
        except ValueError:
            continue
        if 0 <= hour <= 24:
            hours.add(hour % 24)  # some feeds write 24 for midnight
    return frozenset(hours)


def syndication_seconds(period: str | None, frequency: int | None) -> float | None:
    """``sy:updatePeriod`` / ``sy:updateFrequency`` as seconds between updates."""
    if not period:
        return None
    base = _PERIODS.get(period.strip().lower())
    if base is None:
        return None
    freq = frequency if frequency and frequency > 0 else 1
    return base / freq


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = next((v for k, v in headers.items() if k.lower() == name), None)
    return value


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed


def cache_lifetime(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds the response says it stays fresh, or None when it says nothing."""
    control = _header(headers, "cache-control") or ""
    ages = {m.group(1).lower(): int(m.group(2)) for m in _MAX_AGE.finditer(control)}
    if "s-maxage" in ages:
        return float(ages["s-maxage"])
    if "max-age" in ages:
        return float(ages["max-age"])
    expires = _header(headers, "expires")
    if expires is not None:
        when = _http_date(expires)
        if when is None:
            return 0.0  # an invalid Expires means "already expired" (RFC 9111)
        date = _http_date(_header(headers, "date")) or now
        return max(0.0, (when - date).total_seconds())
    return None


def retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    value = _header(headers, "retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


def poll_interval(bounds: Bounds, hints: Hints, headers: Mapping[str, str], now: datetime) -> float:
    """Seconds until the next poll of a feed that just answered (rules 1-4)."""
    interval = bounds.default
    if hints.ttl_minutes and hints.ttl_minutes > 0:
        interval = max(interval, hints.ttl_minutes * 60.0)
    period = syndication_seconds(hints.update_period, hints.update_frequency)
    if period is not None:
        interval = max(interval, period)
    lifetime = cache_lifetime(headers, now)
    if lifetime is not None:
        interval = max(interval, lifetime)
    return max(bounds.minimum, min(interval, bounds.maximum))


def avoid_skipped(when: datetime, hints: Hints, latest: datetime) -> datetime:
    """The first moment at or after ``when`` outside skipHours/skipDays (UTC),
    but never later than ``latest``."""
    if not hints.skip_hours and not hints.skip_days:
        return when
    if len(hints.skip_hours) >= 24 or len(hints.skip_days) >= 7:
        return when  # a feed that skips everything is ignoring its own hints
    candidate = when
    for _ in range(24 * 8):
        if candidate.hour not in hints.skip_hours and candidate.weekday() not in hints.skip_days:
            return min(candidate, latest)
        candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return min(when, latest)


def next_check_after_success(
    bounds: Bounds, hints: Hints, headers: Mapping[str, str], now: datetime
) -> datetime:
    when = now + timedelta(seconds=poll_interval(bounds, hints, headers, now))
    return avoid_skipped(when, hints, now + timedelta(seconds=bounds.maximum))


def error_delay(feed_id: int, error_count: int, bounds: Bounds) -> float:
    """Seconds to wait after the ``error_count``-th consecutive error (rule 6)."""
    base = bounds.minimum * (2 ** min(max(error_count - 1, 0), 30))
    base = min(base, bounds.maximum)
    digest = hashlib.blake2b(f"{feed_id}:{error_count}".encode(), digest_size=8).digest()
    jitter = (int.from_bytes(digest, "big") / 2**64) * 0.2 - 0.1  # [-0.1, 0.1)
    return max(bounds.minimum, min(base * (1 + jitter), bounds.maximum))


def error_wait(status: int | None, headers: Mapping[str, str], now: datetime) -> float | None:
    """The server's ``Retry-After`` in seconds when it counts (on 429 and 503), else None."""
    if status not in RETRY_AFTER_STATUSES:
        return None
    return retry_after(headers, now)


def stop_reason(status: int | None) -> str | None:
    """Why polling stops after an answer with ``status``, or None when it goes on (rule 7)."""
    return GONE if status == 410 else None


def next_check_after_error(
    feed_id: int, error_count: int, bounds: Bounds, now: datetime, *, wait: float | None = None
) -> datetime:
    """``wait`` is the server's Retry-After, a floor that may exceed max_interval
    only up to a week (a server that asks for longer is asking to be dropped)."""
    delay = error_delay(feed_id, error_count, bounds)
    if wait is not None:
        delay = max(delay, min(wait, 7 * 86400.0))
    return now + timedelta(seconds=delay)
