"""The render cache (aggregator.web.cache), the fast path in front of Flask
(aggregator.web.fastpath) and the river page's conditional GET.

What must hold: a cached body is only ever served under the validator it was
rendered for (a story that changes gets a new ETag and a new body); the fast path
answers exactly what Flask answers (status, headers, body); the river page is
validated and cached only for readers without a session.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import feedparser
import pytest
from flask import Flask

from aggregator import metrics, publish
from aggregator.config import Settings
from aggregator.storage import Storage
from aggregator.storage.facade import StoryFilter, feed_choices_fast, river_versions, story_version
from aggregator.web import create_app
from aggregator.web.cache import RenderCache
from tests.test_feeds_out import BASE, RenderCounter, World, at, entry, populate


@pytest.fixture
def world(settings: Settings, storage: Storage) -> Iterator[World]:
    # the storm has 3 articles: 2 pages
    settings = settings.replace(base_url=BASE, river_cache_seconds=0, feed_max_entries=2)
    # (river_cache_seconds=0: these tests see what Flask validates at once; the river's
    # micro-cache in front of it is tested in tests/test_river_cache.py)
    feeds, storm, election, harbour, ferry = populate(storage)
    client = create_app(settings, storage).test_client()
    yield World(storage, settings, client, feeds, storm, election, harbour, ferry)


def add_storm_article(world: World, key: str, hours: float) -> int:
    world.storage.save_entries(
        world.feeds["Beta"],
        [entry(key, f"Storm update {key}", published=at(hours))],
        source="Beta Post",
        fetched_at=at(hours),
    )
    (article,) = world.storage.pending_articles(10)
    world.storage.assign(
        article, world.storm, score=0.6, signal="similar", copy_of=None, signature=None, now=at(hours + 0.1)
    )
    return article.id


# --------------------------------------------------------------------------- the cache itself


def test_the_cache_is_a_bounded_lru() -> None:
    cache = RenderCache(100)
    cache.put("a", b"x" * 20)
    cache.put("b", b"y" * 20)
    assert cache.get("a") == (b"x" * 20, None)  # "a" is now the most recently used
    cache.put("c", b"z" * 20)
    cache.put("d", b"w" * 20)
    cache.put("e", b"v" * 20)
    assert cache.size == 100 and len(cache) == 5
    cache.put("f", b"u" * 20)  # 100 bytes held at most: "b", the least recently used, goes
    assert cache.get("b") is None and cache.size <= 100
    assert cache.get("a") is not None and cache.get("e") is not None
    cache.put("huge", b"h" * 60)  # more than a quarter of the cache: not kept
    assert cache.peek("huge") is None
    off = RenderCache(0)
    off.put("a", b"x")
    assert off.get("a") is None and not off.enabled


def test_the_size_is_a_setting(world: World) -> None:
    assert Settings().render_cache_mb == 64
    app = create_app(world.settings.replace(render_cache_mb=3), world.storage)
    assert app.extensions["aggregator"].renders.max_bytes == 3 * 1024 * 1024
    off = create_app(world.settings.replace(render_cache_mb=0), world.storage)
    assert not off.extensions["aggregator"].renders.enabled


# --------------------------------------------------------------------------- invalidation


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_a_changed_story_gets_a_new_etag_and_a_new_body(
    world: World, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = f"/stories/{world.storm}/feed.{fmt}"
    counter = RenderCounter(monkeypatch, world.storage)
    first = world.client.get(path)
    again = world.client.get(path)  # no validator: a full 200, from the cache
    assert again.status_code == 200 and again.data == first.data
    assert again.headers["ETag"] == first.headers["ETag"]
    assert counter.renders == 1

    article_id = add_storm_article(world, "b9", 7)
    changed = world.client.get(path)
    assert changed.status_code == 200
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert counter.renders == 2  # rendered anew, not served from the old entry
    ids = {item.id for item in feedparser.parse(changed.data).entries}
    assert publish.article_tag(BASE, article_id) in ids
    assert changed.data != first.data
    # The old validator no longer matches; the new one does.
    assert world.client.get(path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 200
    assert world.client.get(path, headers={"If-None-Match": changed.headers["ETag"]}).status_code == 304
    assert counter.renders == 2


def test_an_article_updated_in_place_is_not_served_from_the_cache(world: World) -> None:
    path = f"/stories/{world.storm}/feed.atom"
    old = world.client.get(path)
    assert world.client.get(path).data == old.data  # cached
    world.storage.save_entries(
        world.feeds["Alpha"],
        [entry("a1", "Storm hits the coast", published=at(0), summary="Now with casualty figures.")],
        source="Alpha Times",
        fetched_at=at(8),
    )
    page_two = world.client.get(path + "?page=2")  # the oldest article (a1) is on the last page
    assert b"casualty figures" in page_two.data
    assert world.client.get(path).headers["ETag"] != old.headers["ETag"]


def test_the_river_feed_is_cached_by_its_validator(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = RenderCounter(monkeypatch, world.storage)
    first = world.client.get("/feed.atom")
    assert world.client.get("/feed.atom").data == first.data
    assert counter.renders == 1
    add_storm_article(world, "b9", 7)
    changed = world.client.get("/feed.atom")
    assert changed.headers["ETag"] != first.headers["ETag"] and counter.renders == 2


# --------------------------------------------------------------------------- the fast path


def flask_only(app: Flask) -> Any:
    """The same app without the fast path in front (what Flask alone answers)."""
    inner = app.wsgi_app.wsgi_app  # type: ignore[attr-defined]

    def call(environ: dict[str, Any], start_response: Any) -> Any:
        return inner(environ, start_response)

    return call


def both_answers(world: World, path: str, headers: dict[str, str], method: str = "GET") -> tuple[Any, Any]:
    from werkzeug.test import Client
    from werkzeug.wrappers import Response

    app = create_app(world.settings, world.storage)
    fast = Client(app, Response)
    slow = Client(flask_only(app), Response)
    fast.open(path, method="GET")  # fill the cache
    return fast.open(path, method=method, headers=headers), slow.open(path, method=method, headers=headers)


@pytest.mark.parametrize("fmt", ["atom", "rss"])
@pytest.mark.parametrize("query", ["", "?page=1", "?page=2"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("conditional", [False, True])
def test_the_fast_path_answers_what_flask_answers(
    world: World, fmt: str, query: str, method: str, conditional: bool
) -> None:
    path = f"/stories/{world.storm}/feed.{fmt}{query}"
    etag = world.client.get(path).headers["ETag"]
    headers = {"If-None-Match": etag} if conditional else {}
    fast, slow = both_answers(world, path, headers, method)
    assert fast.status_code == slow.status_code == (304 if conditional else 200)
    assert list(fast.headers.items()) == list(slow.headers.items())
    assert fast.data == slow.data


def test_the_fast_path_answers_without_flask(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(world.settings, world.storage)
    client = app.test_client()
    path = f"/stories/{world.storm}/feed.atom"
    etag = client.get(path).headers["ETag"]  # through Flask: rendered and cached
    calls = []
    inner = app.wsgi_app.wsgi_app  # type: ignore[attr-defined]

    def counting(environ: dict[str, Any], start_response: Any) -> Any:
        calls.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    monkeypatch.setattr(app.wsgi_app, "wsgi_app", counting)
    before = metrics.HTTP_REQUESTS.labels(route="/stories/<int:story_id>/feed.atom", method="GET", status="304")
    count = before._value.get()
    assert client.get(path).status_code == 200
    assert client.get(path, headers={"If-None-Match": etag}).status_code == 304
    assert client.get(path, headers={"If-Modified-Since": client.get(path).headers["Last-Modified"]}).status_code == 304
    assert calls == []  # all answered in front of Flask
    assert before._value.get() == count + 2  # and counted as Flask counts them

    # Everything else goes to Flask.
    assert client.get("/stories/999999/feed.atom").status_code == 404
    assert client.get(f"/stories/{world.ferry}/feed.atom").status_code == 301
    assert client.get(f"/stories/{world.storm}/feed.atom?page=9").status_code == 404
    assert client.get(f"/stories/{world.storm}/feed.atom?page=0").status_code == 400
    assert client.get(f"/stories/{world.storm}/feed.atom?page=x").status_code == 400
    assert client.post(path).status_code == 405
    assert len(calls) == 6


def test_without_a_base_url_flask_answers(world: World) -> None:
    app = create_app(world.settings.replace(base_url=None), world.storage)
    client = app.test_client()
    first = client.get(f"/stories/{world.storm}/feed.atom")
    assert b"http://localhost/stories/" in first.data  # the request's host
    again = client.get(f"/stories/{world.storm}/feed.atom", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304


def test_story_version_is_the_story_record(world: World) -> None:
    version = story_version(world.storage, world.storm)
    record = world.storage.story_record(world.storm, sources=False)
    assert version is not None and record is not None
    assert (version.id, version.updated_at, version.article_count, version.merged_into) == (
        record.id,
        record.updated_at,
        record.article_count,
        record.merged_into,
    )
    merged = story_version(world.storage, world.ferry)
    assert merged is not None and merged.merged_into == world.storm
    assert story_version(world.storage, 999999) is None


# --------------------------------------------------------------------------- the river page


def test_the_river_page_is_validated_and_cached_for_anonymous_readers(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aggregator.web import html

    renders = []
    real = html._river_page

    def counting(*args: Any, **kwargs: Any) -> str:
        renders.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(html, "_river_page", counting)
    first = world.client.get("/")
    assert first.status_code == 200 and first.headers["ETag"]
    assert "Cookie" in first.headers["Vary"]
    assert world.client.get("/").data == first.data
    again = world.client.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert len(renders) == 1
    other = world.client.get("/?min_sources=2")
    assert other.headers["ETag"] != first.headers["ETag"]

    add_storm_article(world, "b9", 7)
    changed = world.client.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and changed.headers["ETag"] != first.headers["ETag"]
    assert b"Storm hits the coast" in changed.data


def test_the_river_page_with_a_session_is_not_cached(world: World) -> None:
    client = world.client
    client.set_cookie("aggregator_session", "anything")
    response = client.get("/")
    assert response.status_code == 200
    assert "ETag" not in response.headers


# --------------------------------------------------------------------------- river listings


@pytest.mark.parametrize("order", ["updated", "sources"])
@pytest.mark.parametrize(
    "flt",
    [
        StoryFilter(),
        StoryFilter(min_sources=2),
        StoryFilter(min_sources=5),
        StoryFilter(text="storm"),
        StoryFilter(folder="World"),
        StoryFilter(since=at(0)),
    ],
    ids=["all", "2+", "5+", "search", "folder", "since"],
)
@pytest.mark.parametrize(("limit", "offset"), [(50, 0), (1, 0), (1, 1), (2, 5)])
def test_river_versions_list_what_find_stories_lists(
    world: World, flt: StoryFilter, order: str, limit: int, offset: int
) -> None:
    total, versions = river_versions(world.storage, flt, limit=limit, offset=offset, order=order)
    page = world.storage.find_stories(flt, limit=limit, offset=offset, order=order, details=False)
    assert total == page.total
    assert [(v.id, v.updated_at, v.article_count) for v in versions] == [
        (s.id, s.updated_at, s.article_count) for s in page.stories
    ]


def test_feed_choices_fast_is_feed_choices(world: World) -> None:
    assert feed_choices_fast(world.storage) == world.storage.feed_choices()


def test_a_river_rerender_reads_only_the_stories_that_changed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = RenderCounter(monkeypatch, world.storage)
    world.client.get("/feed.atom")
    listed = counter.article_reads
    assert listed == 2  # the first page: harbour and storm (feed_max_entries=2)
    add_storm_article(world, "b9", 7)
    changed = world.client.get("/feed.atom")
    assert counter.renders == 2
    assert counter.article_reads == listed + 1  # the storm alone
    # And the entries of the others are what a full render makes.
    fresh = create_app(world.settings.replace(render_cache_mb=0), world.storage).test_client()
    assert fresh.get("/feed.atom").data == changed.data


def test_concurrent_requests_for_one_validator_render_once() -> None:
    cache = RenderCache(1 << 20)
    started = threading.Event()
    release = threading.Event()
    calls: list[int] = []

    def render() -> bytes:
        calls.append(1)
        started.set()
        release.wait(5)
        return b"body"

    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_render("k", render))) for _ in range(6)]
    threads[0].start()
    started.wait(5)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(5)
    assert results == [b"body"] * 6 and len(calls) == 1

    def failing() -> bytes:
        raise RuntimeError("render failed")

    with pytest.raises(RuntimeError):
        cache.get_or_render("bad", failing)
    assert cache.get_or_render("bad", lambda: b"ok") == b"ok"  # a failure is not kept
