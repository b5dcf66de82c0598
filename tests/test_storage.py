"""The storage facade on a real SQLite file and on the real PostgreSQL server."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from aggregator.models import FeedState, ParsedEntry
from aggregator.storage import FeedExistsError, SchemaOutOfDateError, Storage, StorageUnavailableError
from aggregator.storage.facade import StoredSignature
from tests.conftest import NOW, upgrade_concurrently


def entry(key: str, title: str, text: str = "body", *, minutes: int = 0, link: str | None = None) -> ParsedEntry:
    published = NOW + timedelta(minutes=minutes)
    return ParsedEntry(
        key=key,
        title=title,
        link=link or f"https://example.org/{key}",
        summary=text[:100],
        content_html=f"<p>{text}</p>",
        text=text,
        author=None,
        published=published,
        updated=published,
        content_hash=hashlib.sha256(f"{title}\n{text}".encode()).hexdigest(),
    )


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 's.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    storage = Storage(url)
    storage.upgrade()
    yield storage
    storage.close()


def test_migrations_match_the_models(store: Storage) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from aggregator.storage.tables import Base, include_name

    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_name": include_name})
        diff = compare_metadata(context, Base.metadata)
    # SQLite reports DateTime vs the TypeDecorator as equal; anything left is a real drift.
    assert diff == []


def test_schema_is_refused_when_out_of_date(tmp_path: Path) -> None:
    storage = Storage(f"sqlite:///{tmp_path / 'old.db'}")
    with pytest.raises(SchemaOutOfDateError, match="aggregator db upgrade"):
        storage.ensure_schema(auto_upgrade=False)
    storage.ensure_schema(auto_upgrade=True)
    current, head = storage.schema_status()
    assert current == head


def test_feeds_add_list_due_remove(store: Storage) -> None:
    feed = store.add_feed("https://a.example/feed", now=NOW, folder="World")
    with pytest.raises(FeedExistsError):
        store.add_feed("https://a.example/feed", now=NOW)
    other = store.add_feed("https://b.example/feed", now=NOW + timedelta(hours=1))
    assert [f.id for f in store.due_feeds(NOW, 10)] == [feed.id]
    assert {f.id for f in store.due_feeds(NOW + timedelta(hours=2), 10)} == {feed.id, other.id}
    state = FeedState(
        etag='"v1"',
        last_modified="Fri, 20 Nov 2026 10:00:00 GMT",
        last_fetched_at=NOW,
        last_success_at=NOW,
        next_check_at=NOW + timedelta(minutes=30),
        error_count=0,
        last_error=None,
        title="Outlet A",
    )
    store.save_feed_state(feed.id, state)
    saved = store.get_feed(feed.id)
    assert saved is not None
    assert (saved.etag, saved.title, saved.folder) == ('"v1"', "Outlet A", "World")
    assert saved.next_check_at == NOW + timedelta(minutes=30)
    assert store.remove_feed(other.id)
    assert not store.remove_feed(other.id)
    assert [f.id for f in store.list_feeds()] == [feed.id]


def test_entries_are_updated_in_place_never_duplicated(store: Storage) -> None:
    feed = store.add_feed("https://a.example/feed", now=NOW)
    counts = store.save_entries(feed.id, [entry("1", "First"), entry("2", "Second")], source="A", fetched_at=NOW)
    assert (counts.new, counts.updated, counts.unchanged) == (2, 0, 0)
    counts = store.save_entries(
        feed.id, [entry("1", "First"), entry("2", "Second, updated", "new body")], source="A", fetched_at=NOW
    )
    assert (counts.new, counts.updated, counts.unchanged) == (0, 1, 1)
    pending = store.pending_articles(10)
    assert [a.title for a in pending] == ["First", "Second, updated"]
    assert store.counts()["articles"] == 2


def test_duplicate_keys_in_one_document_are_stored_once(store: Storage) -> None:
    feed = store.add_feed("https://a.example/feed", now=NOW)
    counts = store.save_entries(feed.id, [entry("1", "One"), entry("1", "One again")], source="A", fetched_at=NOW)
    assert counts.new == 1
    assert store.counts()["articles"] == 1


def test_assign_merge_and_read_stories(store: Storage) -> None:
    a = store.add_feed("https://a.example/feed", now=NOW)
    b = store.add_feed("https://b.example/feed", now=NOW)
    store.save_entries(a.id, [entry("1", "Storm hits Port Vell", minutes=0)], source="Outlet A", fetched_at=NOW)
    store.save_entries(b.id, [entry("9", "Port Vell storm", minutes=5)], source="Outlet B", fetched_at=NOW)
    store.save_entries(b.id, [entry("10", "Unrelated", minutes=7)], source="Outlet B", fetched_at=NOW)
    first, second, third = store.pending_articles(10)
    sig = StoredSignature("affine32:1:4", b"\x00" * 16)
    s1 = store.assign(first, None, score=0.0, signal="new", copy_of=None, signature=sig, now=NOW)
    s2 = store.assign(second, None, score=0.0, signal="new", copy_of=None, signature=sig, now=NOW)
    s3 = store.assign(third, None, score=0.0, signal="new", copy_of=None, signature=None, now=NOW)
    assert store.pending_articles(10) == []
    store.merge_stories(s1, [s2], now=NOW + timedelta(minutes=1))
    merged = store.get_story(s2)
    assert merged is not None and merged.story.merged_into == s1 and merged.articles == ()
    story = store.get_story(s1)
    assert story is not None
    assert [x.title for x in story.articles] == ["Storm hits Port Vell", "Port Vell storm"]
    assert story.story.headline == "Storm hits Port Vell"
    assert story.story.source_count == 2
    assert story.story.sources == ("Outlet A", "Outlet B")
    assert story.story.updated_at == NOW + timedelta(minutes=1)
    assert [s.id for s in store.list_stories(limit=10)] == [s3, s1]
    assert [s.id for s in store.list_stories(limit=10, min_sources=2)] == [s1]
    assert [s.id for s in store.list_stories(limit=10, order="sources")] == [s1, s3]
    assert store.count_stories(min_sources=2) == 1
    exported = list(store.iter_stories())
    assert [x.story.id for x in exported] == [s1, s3]
    restored = list(store.clustered_articles())
    assert [(x.id, sig_.hashvalues if sig_ else None) for x, sig_ in restored] == [
        (first.id, sig.hashvalues),
        (second.id, sig.hashvalues),
        (third.id, None),
    ]


def test_update_of_a_clustered_article_moves_its_story(store: Storage) -> None:
    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(feed.id, [entry("1", "Vote count")], source="A", fetched_at=NOW)
    (article,) = store.pending_articles(10)
    story_id = store.assign(article, None, score=0.0, signal="new", copy_of=None, signature=None, now=NOW)
    later = NOW + timedelta(hours=3)
    store.save_entries(feed.id, [entry("1", "Vote count, final", "final figures")], source="A", fetched_at=later)
    story = store.get_story(story_id)
    assert story is not None
    assert story.story.updated_at == later
    assert story.articles[0].title == "Vote count, final"
    assert story.articles[0].story_id == story_id
    assert store.pending_articles(10) == []


def test_batch_rolls_back_as_a_whole(store: Storage) -> None:
    feed = store.add_feed("https://a.example/feed", now=NOW)
    with pytest.raises(RuntimeError), store.batch():
        store.save_entries(feed.id, [entry("1", "One")], source="A", fetched_at=NOW)
        raise RuntimeError("crash in the middle of a pass")
    assert store.counts()["articles"] == 0


def test_unreachable_database_is_a_storage_error(tmp_path: Path) -> None:
    missing_dir = tmp_path / "file-not-dir"
    missing_dir.write_text("")
    with pytest.raises(StorageUnavailableError):
        Storage(f"sqlite:///{missing_dir / 'x.db'}").ping()


@pytest.mark.postgres
def test_postgres_down_is_a_storage_error() -> None:
    storage = Storage("postgresql+psycopg://postgres@127.0.0.1:1/test")
    with pytest.raises(StorageUnavailableError, match="database unavailable"):
        storage.ping()


def test_sqlite_timestamps_round_trip_as_utc(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    storage = Storage(url)
    storage.upgrade()
    feed = storage.add_feed("https://a.example/feed", now=NOW)
    assert storage.get_feed(feed.id).added_at == NOW  # type: ignore[union-attr]
    engine = create_engine(url)
    with engine.connect() as conn:
        raw = conn.exec_driver_sql("select added_at from feeds").scalar()
    engine.dispose()
    assert str(raw).startswith("2026-11-20 12:00:00")


def _story_rows(store: Storage, story_ids: list[int]) -> list[tuple[object, ...]]:
    """Every column of the stories, merged_into as a position in ``story_ids``."""
    rows = []
    for story_id in story_ids:
        story = store.story_record(story_id)
        assert story is not None
        merged = None if story.merged_into is None else story_ids.index(story.merged_into)
        rows.append(
            (
                story.headline, story.created_at, story.updated_at, story.first_published,
                story.last_published, story.article_count, story.source_count, story.sources, merged,
            )
        )
    return rows


def _clustering_pass(store: Storage, feed_a: int, feed_b: int) -> list[int]:
    """A pass's storage calls (as ingest makes them): stories created, decisions
    recorded in several steps, a merge in between. Returns the story ids."""
    from aggregator.storage.facade import Assignment

    t = [NOW + timedelta(minutes=m) for m in range(10)]
    store.save_entries(
        feed_a,
        [entry("1", "Storm hits", minutes=3), entry("2", "Storm, update", minutes=9), entry("3", "Quiet day", minutes=1)],
        source="A",
        fetched_at=t[0],
    )
    store.save_entries(
        feed_b,
        [entry("4", "Earlier storm report", minutes=0), entry("5", "Quiet day again", minutes=4), entry("6", "Other", minutes=2)],
        source="B",
        fetched_at=t[0],
    )
    by_key = {a.key: a for a in store.pending_articles(10) if a.feed_id in (feed_a, feed_b)}
    s1 = store.create_story(by_key["1"], now=t[1])
    s2 = store.create_story(by_key["4"], now=t[1])
    s3 = store.create_story(by_key["3"], now=t[1])
    s4 = store.create_story(by_key["6"], now=t[1])

    def assign(key: str, story_id: int) -> Assignment:
        return Assignment(by_key[key].id, story_id, 0.5, "test", None, StoredSignature("p", b"\x01" * 8))

    store.record_assignments([assign("1", s1), assign("3", s3), assign("4", s2), assign("6", s4)], now=t[2])
    store.record_assignments([assign("2", s2), assign("5", s3)], now=t[3])
    assert store.merge_stories(s1, [s2], now=t[4]) == [s2]  # s2 is emptied with the articles noted at t[3]
    store.record_assignments([], now=t[5])
    store.merge_stories(s3, [s4], now=t[6])
    return [s1, s2, s3, s4]


def test_deferred_story_refresh_ends_as_refreshing_at_every_write(store: Storage) -> None:
    a1 = store.add_feed("https://a1.example/feed", now=NOW).id
    b1 = store.add_feed("https://b1.example/feed", now=NOW).id
    a2 = store.add_feed("https://a2.example/feed", now=NOW).id
    b2 = store.add_feed("https://b2.example/feed", now=NOW).id
    with store.batch():
        immediate = _clustering_pass(store, a1, b1)
    with store.deferred_story_refresh():
        deferred = _clustering_pass(store, a2, b2)
        with store.deferred_story_refresh():  # nested: the outer block refreshes
            pass
    expected = _story_rows(store, immediate)
    assert _story_rows(store, deferred) == expected
    t = [NOW + timedelta(minutes=m) for m in range(10)]
    # the survivor: refreshed by the merge; the merged story keeps the headline and times of its articles
    assert expected[0][:7] == ("Earlier storm report", t[1], t[4], NOW, NOW + timedelta(minutes=9), 3, 2)
    assert expected[1][2:] == (t[4], NOW, NOW + timedelta(minutes=9), 0, 0, (), 0)
    assert expected[1][0] == "Earlier storm report"
    assert expected[2][:7] == ("Quiet day", t[1], t[6], NOW + timedelta(minutes=1), NOW + timedelta(minutes=4), 3, 2)
    assert expected[3][0] == "Other" and expected[3][2] == t[6] and expected[3][-1] == 2


def test_deferred_story_refresh_rolls_back_as_a_whole(store: Storage) -> None:
    from aggregator.storage.facade import Assignment

    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(feed.id, [entry("1", "One")], source="A", fetched_at=NOW)
    (article,) = store.pending_articles(10)
    with pytest.raises(RuntimeError), store.deferred_story_refresh():
        story_id = store.create_story(article, now=NOW)
        store.record_assignments([Assignment(article.id, story_id, 1.0, "new", None, None)], now=NOW)
        raise RuntimeError("crash in the middle of a pass")
    assert store.counts()["stories"] == 0
    assert [a.id for a in store.pending_articles(10)] == [article.id]
    # the notes went with the transaction: a later block does not refresh that story
    with store.deferred_story_refresh():
        story_id = store.create_story(article, now=NOW)
        store.record_assignments([Assignment(article.id, story_id, 1.0, "new", None, None)], now=NOW)
    story = store.story_record(story_id)
    assert story is not None and story.article_count == 1 and story.source_count == 1


def test_new_stories_hand_out_ids_at_once_and_write_the_rows_in_bulk(store: Storage) -> None:
    from aggregator.storage.facade import Assignment

    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(
        feed.id, [entry(str(i), f"Story {i}", minutes=i) for i in range(20)], source="A", fetched_at=NOW
    )
    pending = store.pending_articles(100)
    earlier = store.create_story(pending[0], now=NOW)  # an existing story: new ids come after it
    with pytest.raises(RuntimeError, match="batch"):
        store.new_stories()  # outside a write transaction there is nothing to bind the ids to
    with store.deferred_story_refresh():
        new = store.new_stories()
        ids = [new.reserve(article, now=NOW) for article in pending[1:]]  # 19: crosses PG's 8 and 16 blocks
        assert len(set(ids)) == len(ids) and min(ids) > earlier
        assert store.story_record(ids[0]) is None  # nothing written yet
        new.flush()
        new.flush()  # nothing more to write
        store.record_assignments(
            [Assignment(a.id, sid, 1.0, "new", None, None) for a, sid in zip(pending[1:], ids, strict=True)],
            now=NOW,
        )
        # a story created the ordinary way in the same transaction does not collide
        after = store.create_story(pending[0], now=NOW)
        assert after not in ids
    assert store.story_record(after) is not None
    if store.is_sqlite:  # what SQLite itself would have chosen
        assert ids == list(range(earlier + 1, earlier + 20))
    for article, sid in zip(pending[1:], ids, strict=True):
        story = store.story_record(sid)
        assert story is not None
        assert (story.headline, story.article_count, story.first_published) == (article.title, 1, article.published)


def test_new_stories_roll_back_with_their_transaction(store: Storage) -> None:
    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(feed.id, [entry("1", "One")], source="A", fetched_at=NOW)
    (article,) = store.pending_articles(10)
    with pytest.raises(RuntimeError), store.batch():
        new = store.new_stories()
        story_id = new.reserve(article, now=NOW)
        new.flush()
        assert store.story_record(story_id) is not None
        raise RuntimeError("crash in the middle of a pass")
    assert store.story_record(story_id) is None


def test_story_assignments_are_what_iter_stories_yields(store: Storage) -> None:
    a = store.add_feed("https://a.example/feed", now=NOW).id
    b = store.add_feed("https://b.example/feed", now=NOW).id
    stories = _clustering_pass(store, a, b)
    store.save_entries(b, [entry("7", "Not clustered yet")], source="B", fetched_at=NOW)
    expected = [
        (article.feed_id, article.key, item.story.id) for item in store.iter_stories() for article in item.articles
    ]
    assert store.story_assignments() == expected
    assert {story_id for _feed, _key, story_id in expected} == {stories[0], stories[2]}
    assert len(expected) == 6


def test_deferred_story_refresh_in_a_callers_batch_leaves_stories_right_on_error(store: Storage) -> None:
    from aggregator.storage.facade import Assignment

    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(feed.id, [entry("1", "One"), entry("2", "Two", minutes=5)], source="A", fetched_at=NOW)
    first, second = store.pending_articles(10)
    with store.batch():
        story_id = store.create_story(first, now=NOW)
        with pytest.raises(RuntimeError), store.deferred_story_refresh():
            store.record_assignments(
                [Assignment(first.id, story_id, 1.0, "new", None, None),
                 Assignment(second.id, story_id, 0.9, "test", None, None)],
                now=NOW + timedelta(minutes=7),
            )
            raise RuntimeError("an error the caller handles")
    story = store.story_record(story_id)  # the caller's transaction committed: the story is up to date
    assert story is not None
    assert (story.article_count, story.updated_at, story.last_published) == (
        2, NOW + timedelta(minutes=7), NOW + timedelta(minutes=5),
    )


def test_several_processes_upgrading_a_fresh_sqlite_file_do_not_race(tmp_path: Path) -> None:
    """Web workers started together on a new SQLite file all upgrade it: all succeed, one schema."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    for _ in range(3):  # a race is not certain on one try
        (tmp_path / "fresh.db").unlink(missing_ok=True)
        assert upgrade_concurrently(url) == []
        storage = Storage(url)
        current, head = storage.schema_status()
        storage.close()
        assert current == head


def test_saved_articles_are_searchable_and_the_index_survives_updates_and_purges(store: Storage) -> None:
    """SQLite indexes what save_entries inserts in one statement per batch (no insert
    trigger since migration 0006); updates and purges go through the remaining triggers.
    FTS5's integrity check compares the index with the articles table row for row."""
    from sqlalchemy import text

    from aggregator.storage.facade import Assignment, StoryFilter

    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(feed.id, [entry("1", "Volcano erupts", minutes=0), entry("2", "Harbour closed")],
                       source="A", fetched_at=NOW)
    store.save_entries(feed.id, [entry("3", "Volcano ash cloud", minutes=60 * 24 * 10)], source="A", fetched_at=NOW)
    with store.deferred_story_refresh():
        new = store.new_stories()
        pending = store.pending_articles(10)
        ids = {a.key: new.reserve(a, now=NOW) for a in pending}
        new.flush()
        store.record_assignments([Assignment(a.id, ids[a.key], 1.0, "new", None, None) for a in pending], now=NOW)

    def found(words: str) -> set[int]:
        page = store.find_stories(StoryFilter(text=words), limit=10, details=False)
        return {story.id for story in page.stories}

    def check_index() -> None:
        if store.is_sqlite:
            with store.engine.begin() as conn:  # raises "database disk image is malformed" when out of step
                conn.execute(text("INSERT INTO articles_fts(articles_fts, rank) VALUES ('integrity-check', 1)"))

    assert found("volcano") == {ids["1"], ids["3"]}
    assert found("harbour") == {ids["2"]}
    check_index()
    store.save_entries(feed.id, [entry("2", "Harbour reopened", text="changed")], source="A", fetched_at=NOW)
    assert found("reopened") == {ids["2"]}
    check_index()
    store.purge_before(NOW + timedelta(days=1), now=NOW, tombstone_days=30)
    assert found("volcano") == {ids["3"]}
    check_index()
