"""Retention, status figures, heartbeat and metrics figures of the storage facade."""

from __future__ import annotations

from datetime import timedelta

from aggregator.storage import Storage
from aggregator.storage.facade import Assignment, StoredSignature
from tests.conftest import NOW
from tests.test_storage import entry


def _clustered(storage: Storage) -> tuple[int, int, list[int]]:
    """Two feeds; story A has an old and a recent article, story B only old ones."""
    a = storage.add_feed("https://a.example/feed", now=NOW)
    b = storage.add_feed("https://b.example/feed", now=NOW)
    storage.save_entries(a.id, [entry("old-1", "Old story", minutes=-60 * 24 * 100)], source="A", fetched_at=NOW)
    storage.save_entries(b.id, [entry("old-2", "Old story copy", minutes=-60 * 24 * 100 + 5)], source="B", fetched_at=NOW)
    storage.save_entries(a.id, [entry("old-3", "Story A begins", minutes=-60 * 24 * 95)], source="A", fetched_at=NOW)
    storage.save_entries(b.id, [entry("new-1", "Story A goes on", minutes=-60)], source="B", fetched_at=NOW)
    old1, old2, old3, new1 = storage.pending_articles(10)
    sig = StoredSignature("affine32:1:2", b"\x01" * 8)
    with storage.batch():
        story_b = storage.create_story(old1, now=NOW)
        story_a = storage.create_story(old3, now=NOW)
        storage.record_assignments(
            [
                Assignment(old1.id, story_b, 0.0, "new", None, sig),
                Assignment(old2.id, story_b, 1.0, "copy", old1.id, sig),
                Assignment(old3.id, story_a, 0.0, "new", None, sig),
                Assignment(new1.id, story_a, 0.5, "similar", None, sig),
            ],
            now=NOW,
        )
    return story_a, story_b, [old1.id, old2.id, old3.id, new1.id]


def test_purge_removes_old_articles_and_empty_stories(storage: Storage) -> None:
    story_a, story_b, ids = _clustered(storage)
    generation = storage.cluster_generation()
    report = storage.purge_before(NOW - timedelta(days=90), now=NOW, tombstone_days=180)
    assert (report.articles, report.stories) == (3, 1)
    assert storage.get_story(story_b) is None
    kept = storage.get_story(story_a)
    assert kept is not None
    assert [a.id for a in kept.articles] == [ids[3]]
    assert kept.story.article_count == 1 and kept.story.headline == "Story A goes on"
    assert [a.id for a, _ in storage.clustered_articles()] == [ids[3]]
    assert storage.cluster_generation() > generation  # other processes rebuild their index


def test_removed_articles_do_not_come_back_from_their_feed(storage: Storage) -> None:
    _clustered(storage)
    storage.purge_before(NOW - timedelta(days=90), now=NOW, tombstone_days=180)
    feed = storage.list_feeds()[0]
    counts = storage.save_entries(
        feed.id, [entry("old-1", "Old story", minutes=-60 * 24 * 100), entry("fresh", "Fresh")], source="A", fetched_at=NOW
    )
    assert (counts.new, counts.unchanged) == (1, 1)
    # tombstones themselves expire
    report = storage.purge_before(NOW - timedelta(days=90), now=NOW + timedelta(days=400), tombstone_days=180)
    assert report.tombstones_pruned == 3


def test_status_and_metrics_figures(storage: Storage) -> None:
    _clustered(storage)
    feed = storage.list_feeds()[0]
    from aggregator.models import FeedState

    storage.save_feed_state(
        feed.id,
        FeedState(None, None, NOW, None, NOW + timedelta(hours=1), 3, "HTTP 500 Internal Server Error"),
    )
    assert storage.last_tick() == (None, None)
    storage.record_tick(NOW, ok=True)
    storage.record_tick(NOW + timedelta(minutes=1), ok=False)
    status = storage.status(NOW)
    assert status.feeds == 2 and status.feeds_due == 1
    assert [(p.id, p.error_count, p.last_error) for p in status.feeds_in_error] == [
        (feed.id, 3, "HTTP 500 Internal Server Error")
    ]
    assert status.articles == 4 and status.articles_24h == 4 and status.stories == 2
    assert status.last_tick_at == NOW and status.last_tick_ok is False
    assert status.database_bytes and status.database_bytes > 0
    figures = storage.metrics_snapshot()
    assert figures["feeds_in_error"] == 1
    assert figures["story_sizes"] == {2: 2}
    assert storage.maintain().startswith("sqlite")
