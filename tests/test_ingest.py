"""One feed update end to end, and the clustering pass, on a real SQLite file
with feeds served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from aggregator.cli import demo_dir
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.ingest import (
    ClusterEngine,
    cluster_pending,
    error_state,
    run_pass,
    update_feed,
)
from aggregator.models import Feed
from aggregator.storage import Storage
from tests.conftest import NOW
from tests.feedserver import FeedServer, Response


def rss(*items: tuple[str, str, str], title: str = "Test Outlet", ttl: int | None = None) -> bytes:
    body = "".join(
        f"<item><guid>{guid}</guid><title>{t}</title><link>https://outlet.example/{guid}</link>"
        f"<description>{d}</description><pubDate>Fri, 20 Nov 2026 10:00:00 GMT</pubDate></item>"
        for guid, t, d in items
    )
    ttl_el = f"<ttl>{ttl}</ttl>" if ttl else ""
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
        f"<link>https://outlet.example/</link><description>x</description>{ttl_el}{body}</channel></rss>"
    ).encode()


FEED = rss(
    ("a1", "Harbour wall breached at Kelvar", "Storm Orla breached the harbour wall at Kelvar on Monday."),
    ("a2", "Council approves library budget", "The council approved the library budget for next year."),
)


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


def engine_for(settings: Settings) -> ClusterEngine:
    return ClusterEngine(ClusterSettings.from_settings(settings))


# --------------------------------------------------------------------------- pure decisions


# (The back-off and interval rules themselves are tested in tests/test_politeness.py.)


def test_error_state_keeps_validators_and_counts() -> None:
    feed = Feed(1, "https://x.example/f", None, None, None, NOW, '"e"', "lm", None, NOW, NOW, 2, "old")
    state = error_state(feed, "HTTP 500", Settings(), NOW)
    assert (state.etag, state.last_modified, state.error_count, state.last_error) == ('"e"', "lm", 3, "HTTP 500")
    assert state.last_success_at == NOW
    assert state.next_check_at > NOW


# --------------------------------------------------------------------------- fetch -> store


def test_conditional_get_stores_validators_and_handles_304(
    storage: Storage, settings: Settings, server: FeedServer
) -> None:
    server.route("/feed.xml", Response(body=FEED, etag='"v1"', headers={"Content-Type": "application/rss+xml"}))
    feed = storage.add_feed(server.url("/feed.xml"), now=NOW)
    report = update_feed(storage, feed, settings, now=NOW)
    assert (report.status, report.new) == ("ok", 2)
    stored = storage.get_feed(feed.id)
    assert stored is not None and stored.etag == '"v1"' and stored.title == "Test Outlet"
    assert stored.next_check_at == NOW + timedelta(seconds=settings.default_interval)

    report = update_feed(storage, stored, settings, now=NOW + timedelta(hours=1))
    assert report.status == "not_modified"
    second = server.requests_to("/feed.xml")[1]
    assert second.headers["if-none-match"] == '"v1"'
    assert second.headers["user-agent"] == settings.user_agent
    again = storage.get_feed(feed.id)
    assert again is not None and again.etag == '"v1"' and again.error_count == 0
    assert storage.counts()["articles"] == 2


def test_changed_entries_are_updated_in_place(storage: Storage, settings: Settings, server: FeedServer) -> None:
    server.route("/feed.xml", Response(body=FEED))
    feed = storage.add_feed(server.url("/feed.xml"), now=NOW)
    update_feed(storage, feed, settings, now=NOW)
    server.route(
        "/feed.xml",
        Response(
            body=rss(
                ("a1", "Harbour wall breached at Kelvar, two hurt", "Updated: two people were hurt."),
                ("a2", "Council approves library budget", "The council approved the library budget for next year."),
                ("a3", "New item", "Something new."),
            )
        ),
    )
    report = update_feed(storage, storage.get_feed(feed.id), settings, now=NOW + timedelta(hours=1))  # type: ignore[arg-type]
    assert (report.new, report.updated, report.unchanged) == (1, 1, 1)
    assert storage.counts()["articles"] == 3


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (Response(body=b"this is not xml at all, just words"), "XML error"),
        (Response(body=b"<html><head><title>Oops</title></head><body>Error</body></html>"), "HTML"),
        (Response(status=404, body=b"gone"), "404"),
        (Response(status=500, body=b"boom"), "500"),
        (Response(body=FEED, delay=3.0), "timed out"),
        (Response(body=b"<rss>" + b"x" * 300_000 + b"</rss>"), "larger than"),
    ],
    ids=["not-xml", "html", "404", "500", "timeout", "oversized"],
)
def test_broken_feed_is_marked_and_nothing_else_is_touched(
    storage: Storage, settings: Settings, server: FeedServer, response: Response, message: str
) -> None:
    settings = settings.replace(fetch_timeout=1.0, max_feed_bytes=100_000)
    server.route("/good.xml", Response(body=rss(("g1", "Good one", "A fine article."), title="Good")))
    server.route("/flaky.xml", Response(body=FEED))
    good = storage.add_feed(server.url("/good.xml"), now=NOW)
    flaky = storage.add_feed(server.url("/flaky.xml"), now=NOW)
    engine = engine_for(settings)
    run_pass(storage, engine, settings, all_feeds=True)
    assert storage.counts()["articles"] == 3
    stories_before = storage.counts()["stories"]

    server.route("/flaky.xml", response)  # the feed breaks
    report = run_pass(storage, engine, settings, all_feeds=True)
    by_feed = {r.feed_id: r for r in report.feeds}
    assert by_feed[good.id].status == "not_modified" or by_feed[good.id].status == "ok"
    assert by_feed[flaky.id].status == "error"
    assert message in (by_feed[flaky.id].error or "")
    broken = storage.get_feed(flaky.id)
    assert broken is not None
    assert broken.error_count == 1 and message in (broken.last_error or "")
    assert broken.last_success_at is not None
    assert broken.next_check_at > NOW
    # nothing already stored is lost
    assert storage.counts()["articles"] == 3
    assert storage.counts()["stories"] == stories_before
    assert storage.get_feed(good.id).error_count == 0  # type: ignore[union-attr]

    server.route("/flaky.xml", Response(body=FEED))  # and it recovers
    run_pass(storage, engine, settings, all_feeds=True)
    healed = storage.get_feed(flaky.id)
    assert healed is not None and healed.error_count == 0 and healed.last_error is None


def test_missing_local_file_is_an_error_not_a_crash(storage: Storage, settings: Settings, tmp_path: Path) -> None:
    feed = storage.add_feed((tmp_path / "nope.xml").as_uri(), now=NOW)
    report = update_feed(storage, feed, settings, now=NOW)
    assert report.status == "error" and "not found" in (report.error or "")


# --------------------------------------------------------------------------- clustering


def _copy_feeds(tmp_path: Path) -> list[Path]:
    paths = []
    for name in ("wire", "paper"):
        text = rss(
            (
                f"{name}-1",
                "Storm Orla breaches Kelvar harbour wall",
                "Storm Orla breached the harbour wall at Kelvar Harbour on Monday, flooding 60 homes on "
                "Quay Street, the coastguard said. Mayor Ilse Brandt opened the sports hall to residents.",
            ),
            title=name.title(),
        )
        path = tmp_path / f"{name}.xml"
        path.write_bytes(text)
        paths.append(path)
    return paths


def test_copies_from_two_feeds_form_one_story(storage: Storage, settings: Settings, tmp_path: Path) -> None:
    for path in _copy_feeds(tmp_path):
        storage.add_feed(path.as_uri(), now=NOW)
    report = run_pass(storage, engine_for(settings), settings, all_feeds=True)
    assert report.cluster.clustered == 2
    (story,) = list(storage.iter_stories())
    assert story.story.source_count == 2
    second = story.articles[1]
    assert second.copy_of == story.articles[0].id
    assert second.signal in {"copy", "same_url"}


def test_same_url_from_two_feeds_is_one_story(storage: Storage, settings: Settings, server: FeedServer) -> None:
    shared = rss(("x", "Completely different words here", "Alpha beta gamma."), title="One")
    other = rss(("y", "Nothing alike at all", "Delta epsilon zeta."), title="Two").replace(
        b"https://outlet.example/y", b"https://outlet.example/x?utm_source=rss"
    )
    server.route("/one.xml", Response(body=shared))
    server.route("/two.xml", Response(body=other))
    storage.add_feed(server.url("/one.xml"), now=NOW)
    storage.add_feed(server.url("/two.xml"), now=NOW)
    run_pass(storage, engine_for(settings), settings, all_feeds=True)
    (story,) = list(storage.iter_stories())
    assert [a.signal for a in story.articles][1] == "same_url"
    assert story.articles[1].copy_of == story.articles[0].id


def _demo_settings(settings: Settings) -> Settings:
    return settings.replace(allow_file_urls=True)


def _subscribe_demo(storage: Storage) -> None:
    from aggregator.cli import import_opml

    import_opml(storage, demo_dir() / "demo.opml")


def _story_sets(storage: Storage) -> set[frozenset[str]]:
    return {frozenset(a.url or "" for a in item.articles) for item in storage.iter_stories()}


def test_demo_feeds_cluster_as_labelled(storage: Storage, settings: Settings) -> None:
    from aggregator.cluster.metrics import bcubed

    _subscribe_demo(storage)
    report = run_pass(storage, engine_for(settings), _demo_settings(settings), all_feeds=True)
    assert all(r.status == "ok" for r in report.feeds), [r.error for r in report.feeds]
    labels = json.loads((demo_dir() / "labels.json").read_text())
    predicted = {a.url: item.story.id for item in storage.iter_stories() for a in item.articles}
    assert set(predicted) == set(labels)
    p, r, f1 = bcubed(predicted, labels)
    assert f1 >= 0.9, (p, r, f1)
    assert storage.count_stories(min_sources=2) >= 10
    # every article is in exactly one story
    ids = [a.id for item in storage.iter_stories() for a in item.articles]
    assert len(ids) == len(set(ids)) == storage.counts()["articles"]


def test_restart_changes_no_assignment(storage: Storage, settings: Settings) -> None:
    """Cluster half the demo, restart (a new engine rebuilt from the database),
    cluster the rest: the same stories as one uninterrupted run."""
    settings = _demo_settings(settings)
    _subscribe_demo(storage)
    feeds = storage.list_feeds()
    engine = engine_for(settings)
    from aggregator.ingest import update_feeds

    update_feeds(storage, feeds[:3], settings)
    cluster_pending(storage, engine)
    update_feeds(storage, feeds[3:], settings)
    restarted = engine_for(settings)
    report = cluster_pending(storage, restarted)
    assert report.rebuilt
    interrupted = _story_sets(storage)

    other = Storage(settings.database_url.replace("aggregator.db", "again.db"))
    other.ensure_schema(auto_upgrade=True)
    _subscribe_demo(other)
    one_engine = engine_for(settings)
    update_feeds(other, other.list_feeds()[:3], settings)
    cluster_pending(other, one_engine)
    update_feeds(other, other.list_feeds()[3:], settings)
    cluster_pending(other, one_engine)
    assert _story_sets(other) == interrupted
    other.close()


def test_second_process_sees_the_first_ones_stories(storage: Storage, settings: Settings, tmp_path: Path) -> None:
    """Two engines on one database (the daemon and a CLI command): the second
    rebuilds from the database instead of starting a duplicate story."""
    wire, paper = _copy_feeds(tmp_path)
    storage.add_feed(wire.as_uri(), now=NOW)
    first, second = engine_for(settings), engine_for(settings)
    run_pass(storage, first, settings, all_feeds=True)
    storage.add_feed(paper.as_uri(), now=NOW)
    report = run_pass(storage, second, settings, all_feeds=True)
    assert report.cluster.rebuilt
    assert storage.counts()["stories"] == 1
    # the first notices the second's pass and catches up with its one article (no rebuild)
    assert cluster_pending(storage, first).caught_up == 1


def test_update_feeds_shares_one_http_client_per_pass(
    storage: Storage, settings: Settings, server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One client (one connection pool, one TLS context) serves every fetch of a pass."""
    from aggregator import fetch as fetch_module
    from aggregator.ingest import update_feeds

    made = []
    original = fetch_module.make_client

    def counting(**kwargs: object) -> object:
        client = original(**kwargs)  # type: ignore[arg-type]
        made.append(client)
        return client

    monkeypatch.setattr(fetch_module, "make_client", counting)
    for n in range(4):
        server.route(f"/f{n}.xml", Response(body=rss((f"g{n}", f"Title {n}", f"Text {n}"))))
    feeds = [storage.add_feed(server.url(f"/f{n}.xml"), now=NOW) for n in range(4)]
    reports = update_feeds(storage, feeds, settings.replace(fetch_workers=2))
    assert sorted(r.new for r in reports) == [1, 1, 1, 1]
    assert len(made) == 1
    assert made[0].is_closed  # closed with the pass
