"""Real-world and test-suite feeds through the whole pipeline: feedparser's
corpus of 2,108 well-formed, ill-formed, encoding and entity test feeds as
local files, and the real outlet snapshots of ../shared served over HTTP,
snapshot after snapshot, on one real SQLite database.

Every document ends stored or marked with a readable error, nothing raises,
nothing is stored twice, and a repeated pass adds nothing.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, cluster_pending, run_pass, update_feeds
from aggregator.storage import Storage
from aggregator.storage.facade import articles, stories
from tests.conftest import NOW, shared_path
from tests.feedserver import FeedServer, Response

# What a readable error looks like: one of the messages fetch and parse write.
READABLE_ERROR = re.compile(
    r"^(XML error: .+|not a feed: .+|refusing to parse: .+|cannot parse the document: .+|HTTP \d{3}.*)$"
)


def engine_for(settings: Settings) -> ClusterEngine:
    return ClusterEngine(ClusterSettings.from_settings(settings))


def assert_consistent(storage: Storage) -> None:
    """No (feed, key) twice; every story's counts are those of its articles;
    nothing left pending; every clustered article points at a live story."""
    with storage.engine.connect() as conn:
        duplicates = conn.execute(
            select(articles.c.feed_id, articles.c.key)
            .group_by(articles.c.feed_id, articles.c.key)
            .having(func.count() > 1)
        ).all()
        assert duplicates == []
        pending = conn.execute(
            select(func.count()).select_from(articles).where(articles.c.clustered.is_(False))
        ).scalar_one()
        assert pending == 0
        counted = dict(
            conn.execute(
                select(articles.c.story_id, func.count()).group_by(articles.c.story_id)
            ).all()
        )
        for row in conn.execute(select(stories)).all():
            if row.merged_into is None:
                assert row.article_count == counted.get(row.id, 0), row
            else:
                assert counted.get(row.id, 0) == 0, row
        orphans = conn.execute(
            select(func.count())
            .select_from(articles.join(stories, articles.c.story_id == stories.c.id))
            .where(stories.c.merged_into.is_not(None))
        ).scalar_one()
        assert orphans == 0


# --------------------------------------------------------------------------- feedparser's corpus


@pytest.mark.slow
def test_feedparser_corpus_every_file_stored_or_marked(storage: Storage, settings: Settings) -> None:
    root = shared_path("corpora", "feedparser")
    files = sorted(root.rglob("*.xml"))
    assert len(files) > 2000
    settings = settings.replace(fetch_workers=8)
    feeds = [storage.add_feed(path.as_uri(), now=NOW) for path in files]
    engine = engine_for(settings)

    reports = update_feeds(storage, feeds, settings)
    cluster_pending(storage, engine)

    assert len(reports) == len(files)
    by_id = {feed.id: feed for feed in storage.list_feeds()}
    errors: dict[str, str] = {}
    for report in reports:
        feed = by_id[report.feed_id]
        assert feed.last_fetched_at is not None
        if report.status == "error":
            assert feed.last_error and feed.error_count == 1
            assert READABLE_ERROR.match(feed.last_error), (feed.url, feed.last_error)
            assert "internal error" not in feed.last_error
            errors[feed.url] = feed.last_error
        else:
            assert report.status == "ok", report
            assert feed.last_error is None and feed.error_count == 0
    # Most of the corpus is usable; the errors are the documents with no entries
    # that are also broken (undefined entities, truncated XML, CDF channels).
    assert len(errors) < len(files) // 5
    assert not any("/wellformed/rss/" in url or "/wellformed/atom10/" in url for url in errors), [
        url for url in errors if "/wellformed/" in url
    ][:5]
    counts = storage.counts()
    assert counts["articles"] > 500
    assert_consistent(storage)

    # Every document again, validators dropped so each one is parsed again:
    # the same keys come out, so nothing is new, nothing changed.
    again = [dataclasses.replace(feed, etag=None, last_modified=None) for feed in storage.list_feeds()]
    second = update_feeds(storage, again, settings)
    assert sum(report.new for report in second) == 0
    assert sum(report.updated for report in second) == 0
    assert {r.feed_id for r in second if r.status == "error"} == {r.feed_id for r in reports if r.status == "error"}
    assert cluster_pending(storage, engine).clustered == 0
    assert storage.counts()["articles"] == counts["articles"]
    assert_consistent(storage)


# --------------------------------------------------------------------------- real outlets


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


@pytest.mark.slow
def test_news_snapshots_one_after_another_over_http(
    storage: Storage, settings: Settings, server: FeedServer
) -> None:
    root = shared_path("corpora", "news-snapshots")
    snapshots = sorted(path for path in root.iterdir() if path.is_dir())
    assert len(snapshots) == 5
    names = sorted({path.name for snapshot in snapshots for path in snapshot.glob("*.xml")})
    settings = settings.replace(fetch_workers=8)
    feeds = {name: storage.add_feed(server.url(f"/{name}"), now=NOW) for name in names}
    engine = engine_for(settings)
    html_pages = {"latimes.xml", "straittimes.xml"}
    total_new = html_marked = 0
    for snapshot in snapshots:
        for name in names:
            path = snapshot / name
            if path.exists():
                body = path.read_bytes()
                server.route(f"/{name}", Response(body=body, headers={"Content-Type": "application/rss+xml"}))
            else:
                server.route(f"/{name}", Response(status=404, body=b"gone"))
        report = run_pass(storage, engine, settings, all_feeds=True)
        by_name = {r.url.rsplit("/", 1)[1]: r for r in report.feeds}
        for name, result in by_name.items():
            path = snapshot / name
            if not path.exists():
                assert result.status == "error" and result.error == "HTTP 404 Not Found"
            elif name in html_pages and b"<html" in path.read_bytes()[:4096].lower():
                assert result.status == "error"
                assert (result.error or "").startswith("not a feed: the document is HTML ("), result.error
            else:
                assert result.status == "ok", (snapshot.name, name, result.error)
        total_new += sum(r.new for r in report.feeds)
        assert report.cluster.clustered == sum(r.new for r in report.feeds)
        assert_consistent(storage)

        # The same snapshot again: nothing new, nothing changed.
        repeat = run_pass(storage, engine, settings, all_feeds=True)
        assert sum(r.new for r in repeat.feeds) == 0
        assert sum(r.updated for r in repeat.feeds) == 0
        html_marked += sum(1 for r in report.feeds if (r.error or "").startswith("not a feed: the document is HTML"))
    assert storage.counts()["articles"] == total_new > 1000
    assert html_marked >= 4  # the error pages saved in place of latimes and straitstimes
    # latimes came back as a real feed in the last snapshot: its error is cleared
    latimes = storage.get_feed(feeds["latimes.xml"].id)
    assert latimes is not None and latimes.error_count == 0 and latimes.article_count > 0
    assert_consistent(storage)
