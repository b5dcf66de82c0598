"""The river's micro-cache (aggregator.web.fastpath.RiverCache).

What must hold: within ``river_cache_seconds`` an anonymous reader's request for
the river is answered as Flask answered it the first time (same status, headers,
body; 304 for its ETag) without asking the database; after that Flask validates
again and a change shows; a reader with a session, an answer that sets a cookie
or that is not 200/304 never goes through it; it holds a bounded number of keys;
0 turns it off.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aggregator import metrics
from aggregator.config import Settings
from aggregator.storage import Storage
from aggregator.web import create_app, fastpath, html
from aggregator.web.fastpath import RiverCache
from tests.test_feeds_out import BASE, World, populate
from tests.test_render_cache import add_storm_article
from tests.test_web_view import TOKEN, sign_in


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(fastpath.time, "monotonic", c)
    return c


@pytest.fixture
def world(settings: Settings, storage: Storage) -> Iterator[World]:
    settings = settings.replace(base_url=BASE, river_cache_seconds=5, api_token=TOKEN)
    feeds, storm, election, harbour, ferry = populate(storage)
    client = create_app(settings, storage).test_client()
    yield World(storage, settings, client, feeds, storm, election, harbour, ferry)


class Queries:
    """Counts the river's validator queries (the real function still runs)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = html.river_versions

        def counting(*args: Any, **kwargs: Any) -> Any:
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(html, "river_versions", counting)
        from aggregator.web import atom

        monkeypatch.setattr(atom, "river_versions", counting)


def comparable(headers: Any) -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in headers.items() if k not in ("Date",))


@pytest.mark.parametrize("path", ["/", "/feed.atom", "/feed.rss", "/?min_sources=2", "/feed.atom?page=1"])
def test_a_kept_answer_is_flasks_answer_and_asks_no_query(
    world: World, clock: Clock, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    queries = Queries(monkeypatch)
    first = world.client.get(path)
    assert first.status_code == 200 and queries.n == 1
    again = world.client.get(path)
    assert queries.n == 1  # from the micro-cache
    assert again.status_code == 200 and again.data == first.data
    assert comparable(again.headers) == comparable(first.headers)
    # what Flask itself answers now, with no cache in front: the same
    plain = create_app(world.settings.replace(river_cache_seconds=0), world.storage).test_client().get(path)
    assert plain.data == first.data and comparable(plain.headers) == comparable(first.headers)
    # the kept ETag is answered 304, like Flask answers it
    etag = first.headers["ETag"]
    cached_304 = world.client.get(path, headers={"If-None-Match": etag})
    flask_304 = create_app(world.settings.replace(river_cache_seconds=0), world.storage).test_client().get(
        path, headers={"If-None-Match": etag}
    )
    assert queries.n == 3  # the two fresh apps above asked; the kept answer did not
    assert cached_304.status_code == flask_304.status_code == 304 and cached_304.data == b""
    assert comparable(cached_304.headers) == comparable(flask_304.headers)
    # an old ETag gets the kept 200
    other = world.client.get(path, headers={"If-None-Match": '"0123"'})
    assert other.status_code == 200 and other.data == first.data and queries.n == 3


def test_a_change_shows_once_the_kept_answer_expires(world: World, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    queries = Queries(monkeypatch)
    first = world.client.get("/feed.atom")
    add_storm_article(world, "b9", 7)
    clock.now += 4.9
    assert world.client.get("/feed.atom").headers["ETag"] == first.headers["ETag"]  # up to 5 s late
    assert queries.n == 1
    clock.now += 0.2
    changed = world.client.get("/feed.atom")
    assert queries.n == 2 and changed.headers["ETag"] != first.headers["ETag"]
    assert b"Storm update b9" in changed.data
    # a reader holding the old ETag now gets the new feed, not a 304
    stale = world.client.get("/feed.atom", headers={"If-None-Match": first.headers["ETag"]})
    assert stale.status_code == 200 and stale.headers["ETag"] == changed.headers["ETag"]


def test_a_304_from_flask_is_kept_too(world: World, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    etag = create_app(world.settings.replace(river_cache_seconds=0), world.storage).test_client().get("/").headers[
        "ETag"
    ]
    queries = Queries(monkeypatch)
    for _ in range(3):
        response = world.client.get("/", headers={"If-None-Match": etag})
        assert response.status_code == 304
    assert queries.n == 1
    # a reader without the ETag: Flask renders (the 304 has no body to replay), then kept
    assert world.client.get("/").status_code == 200 and queries.n == 2
    assert world.client.get("/").status_code == 200 and queries.n == 2


def test_readers_with_a_session_and_other_answers_are_not_kept(
    world: World, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    anonymous = world.client.get("/")
    kept = world.client.application.wsgi_app.river  # type: ignore[attr-defined]
    assert len(kept) == 1
    operator = create_app(world.settings, world.storage).test_client()
    sign_in(operator)
    operator_cache = operator.application.wsgi_app.river  # type: ignore[attr-defined]
    for _ in range(2):  # an operator's river is rendered every time, never kept, never served
        page = operator.get("/")
        assert page.status_code == 200 and b"Ada" in page.data and b"Ada" not in anonymous.data
    assert len(operator_cache) == 0
    # nor is the anonymous answer served to a signed-in operator from this process's cache
    world_operator = world.client
    sign_in(world_operator)
    assert b"Ada" in world_operator.get("/").data
    # errors are not kept
    fresh = create_app(world.settings, world.storage).test_client()
    assert fresh.get("/?page=abc").status_code == 400
    assert fresh.get("/?page=abc").status_code == 400
    assert len(fresh.application.wsgi_app.river) == 0  # type: ignore[attr-defined]


KEY = ("http", "x", "x", "80", "", "/", "")


def test_an_answer_that_sets_a_cookie_or_is_not_200_304_is_not_kept(clock: Clock) -> None:
    cache = RiverCache(5)
    cache.put(KEY, "200 OK", [("ETag", '"a"'), ("Set-Cookie", "s=1")], b"body", clock.now)
    assert cache.get(KEY) is None
    cache.put(KEY, "200 OK", [("ETag", 'W/"weak"')], b"body", clock.now)  # only strong validators
    assert cache.get(KEY) is None
    cache.put(KEY, "500 INTERNAL SERVER ERROR", [("ETag", '"a"')], b"body", clock.now)
    assert cache.get(KEY) is None
    cache.put(KEY, "200 OK", [("ETag", '"a"')], b"x" * (RiverCache.MAX_BODY + 1), clock.now)
    assert cache.get(KEY) is None
    cache.put(KEY, "200 OK", [("ETag", '"a"')], b"body", clock.now)
    assert cache.get(KEY) is not None


def test_an_answer_asked_for_earlier_never_replaces_a_newer_one(clock: Clock) -> None:
    """A slow render that finishes last must not bring an older river back; an answer
    lives ``seconds`` from when Flask was asked for it."""
    cache = RiverCache(1)
    slow_asked = clock.now
    clock.now += 0.3
    cache.put(KEY, "200 OK", [("ETag", '"new"')], b"new", clock.now)  # asked later, finished first
    clock.now += 0.2
    cache.put(KEY, "200 OK", [("ETag", '"old"')], b"old", slow_asked)  # the slow one finishes
    kept = cache.get(KEY)
    assert kept is not None and kept.etag == "new"
    clock.now += 0.85  # 1.05 s after "new" was asked for
    assert cache.get(KEY) is None
    cache.put(KEY, "200 OK", [("ETag", '"late"')], b"late", clock.now - 1.5)  # older than it may live
    assert cache.get(KEY) is None


def test_the_cache_is_bounded_in_keys_and_bytes_and_drops_expired_entries(world: World, clock: Clock) -> None:
    cache = RiverCache(5)
    for i in range(RiverCache.MAX_ENTRIES + 50):
        cache.put((*KEY[:-1], f"q={i}"), "200 OK", [("ETag", '"a"')], b"x", clock.now)
    assert len(cache) <= RiverCache.MAX_ENTRIES
    assert cache.get((*KEY[:-1], f"q={RiverCache.MAX_ENTRIES + 49}")) is not None
    big = b"y" * (RiverCache.MAX_BODY - 1)
    for i in range(2 * RiverCache.MAX_BYTES // RiverCache.MAX_BODY):
        cache.put((*KEY[:-1], f"big={i}"), "200 OK", [("ETag", '"a"')], big, clock.now)
    assert 0 < cache.size <= RiverCache.MAX_BYTES
    clock.now += 6
    cache.put(KEY, "200 OK", [("ETag", '"a"')], b"z", clock.now)  # every other entry has expired
    assert len(cache) == 1 and cache.size == 1
    assert RiverCache.key({"QUERY_STRING": "q=" + "x" * 600}) is None  # too long: never kept


def test_hosts_are_kept_apart(world: World, clock: Clock) -> None:
    # without base_url the river feed's links come from the request's host: one entry per host
    client = create_app(world.settings.replace(base_url=None), world.storage).test_client()
    one = client.get("/feed.atom", base_url="http://one.example")
    two = client.get("/feed.atom", base_url="http://two.example")
    assert b"one.example" in one.data and b"two.example" in two.data and b"one.example" not in two.data
    # an empty Host header is not the server's name (Flask builds other links for it)
    assert RiverCache.key({"HTTP_HOST": "", "SERVER_NAME": "a"}) != RiverCache.key({"SERVER_NAME": "a"})


def test_head_and_metrics(world: World, clock: Clock) -> None:
    def count(status: str) -> float:
        value = metrics.HTTP_REQUESTS.labels(route="/feed.atom", method="GET", status=status)._value.get()
        return float(value)

    before = count("200")
    world.client.get("/feed.atom")
    world.client.get("/feed.atom")
    assert count("200") == before + 2  # the kept answer is counted like Flask's
    head = world.client.head("/feed.atom")  # HEAD goes to Flask (not kept)
    assert head.status_code == 200 and head.data == b""
    assert world.client.head("/feed.atom").data == b""
    assert len(world.client.application.wsgi_app.river) == 1  # type: ignore[attr-defined]


def test_zero_turns_it_off(world: World, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().river_cache_seconds == 1.0
    client = create_app(world.settings.replace(river_cache_seconds=0), world.storage).test_client()
    queries = Queries(monkeypatch)
    client.get("/")
    client.get("/")
    assert queries.n == 2
