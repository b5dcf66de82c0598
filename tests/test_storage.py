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


# ------------------------------------------------------------------ fast paths of the ingest hot loop


def test_tombstoned_keys_are_skipped_per_feed_among_several_feeds(store: Storage) -> None:
    """The per-feed probe (``_HAS_TOMBSTONES``) must find a feed's tombstones and only its own."""
    from sqlalchemy import insert

    from aggregator.storage.operations import tombstones

    a = store.add_feed("https://a.example/feed", now=NOW)
    b = store.add_feed("https://b.example/feed", now=NOW)
    c = store.add_feed("https://c.example/feed", now=NOW)
    with store.engine.begin() as conn:
        conn.execute(insert(tombstones), [
            {"feed_id": a.id, "key": "gone", "removed_at": NOW},
            {"feed_id": a.id, "key": "also-gone", "removed_at": NOW},
            {"feed_id": c.id, "key": "other", "removed_at": NOW},
        ])
    entries = [entry("gone", "Gone"), entry("kept", "Kept"), entry("also-gone", "Also gone"), entry("other", "Other")]
    counts = store.save_entries(a.id, entries, source="A", fetched_at=NOW)
    assert (counts.new, counts.updated, counts.unchanged) == (2, 0, 2)
    counts = store.save_entries(b.id, entries, source="B", fetched_at=NOW)  # no tombstone: all new
    assert (counts.new, counts.updated, counts.unchanged) == (4, 0, 0)
    counts = store.save_entries(c.id, entries, source="C", fetched_at=NOW)
    assert (counts.new, counts.updated, counts.unchanged) == (3, 0, 1)
    stored = {(x.feed_id, x.key) for x in store.pending_articles(100)}
    assert stored == {(a.id, "kept"), (a.id, "other")} | {(b.id, e.key) for e in entries} | {
        (c.id, "gone"), (c.id, "kept"), (c.id, "also-gone")
    }
    with store.batch():
        assert store.tombstoned_keys(store._local.conn, a.id, ["gone", "kept", "other"]) == {"gone"}
        assert store.tombstoned_keys(store._local.conn, b.id, ["gone", "kept"]) == set()
        assert store.tombstoned_keys(store._local.conn, a.id, []) == set()


def test_feed_state_updates_only_the_columns_given(store: Storage) -> None:
    """save_feed_state's cached statements: title, site_url and url only when set, url only when free."""
    a = store.add_feed("https://a.example/feed", now=NOW, title="Mine")
    b = store.add_feed("https://b.example/feed", now=NOW)
    base = FeedState(etag='"1"', last_modified=None, last_fetched_at=NOW, last_success_at=NOW,
                     next_check_at=NOW + timedelta(hours=1), error_count=0, last_error=None)
    store.save_feed_state(a.id, base)
    got = store.get_feed(a.id)
    assert got is not None and (got.title, got.site_url, got.url, got.etag) == ("Mine", None, a.url, '"1"')
    moved = FeedState(etag=None, last_modified="x", last_fetched_at=NOW, last_success_at=NOW,
                      next_check_at=NOW, error_count=2, last_error="boom", title="New title",
                      site_url="https://a.example/", url="https://a2.example/feed")
    store.save_feed_state(a.id, moved)
    got = store.get_feed(a.id)
    assert got is not None
    assert (got.title, got.site_url, got.url, got.etag, got.last_modified, got.error_count, got.last_error) == (
        "New title", "https://a.example/", "https://a2.example/feed", None, "x", 2, "boom"
    )
    store.save_feed_state(b.id, FeedState(etag=None, last_modified=None, last_fetched_at=NOW, last_success_at=None,
                                          next_check_at=NOW, error_count=1, last_error="e",
                                          url="https://a2.example/feed"))  # taken by a: not moved
    got_b = store.get_feed(b.id)
    assert got_b is not None and got_b.url == b.url and got_b.error_count == 1


def test_record_assignments_writes_copies_and_clears_a_previous_copy_of(store: Storage) -> None:
    """Rows with and without copy_of in one batch, an
    article re-assigned with copy_of None after a copy (cleared), and an article twice in
    one call (the last assignment wins, as with one statement)."""
    from aggregator.storage.facade import Assignment

    feed = store.add_feed("https://a.example/feed", now=NOW)
    store.save_entries(feed.id, [entry(str(i), f"Title {i}", minutes=i) for i in range(6)], source="A", fetched_at=NOW)
    arts = store.pending_articles(10)
    sig = StoredSignature("affine32:1:4", b"\x01" * 16)
    with store.deferred_story_refresh():
        new = store.new_stories()
        s1 = new.reserve(arts[0], now=NOW)
        s2 = new.reserve(arts[3], now=NOW)
        new.flush()
        store.record_assignments([
            Assignment(arts[0].id, s1, 0.0, "new", None, sig),
            Assignment(arts[1].id, s1, 1.0, "copy", arts[0].id, sig),
            Assignment(arts[2].id, s1, 0.7, "similar", None, None),
            Assignment(arts[3].id, s2, 0.0, "new", None, sig),
            Assignment(arts[4].id, s2, 1.0, "same_url", arts[3].id, sig),
        ], now=NOW)
    by_id = {a.id: a for a in store.get_story(s1).articles + store.get_story(s2).articles}  # type: ignore[union-attr]
    assert [(by_id[a.id].story_id, by_id[a.id].copy_of, by_id[a.id].signal) for a in arts[:5]] == [
        (s1, None, "new"), (s1, arts[0].id, "copy"), (s1, None, "similar"), (s2, None, "new"), (s2, arts[3].id, "same_url")
    ]
    # Re-assigned without copy_of: the earlier copy_of is cleared; arts[5] twice, the last wins.
    store.record_assignments([
        Assignment(arts[1].id, s2, 0.4, "similar", None, sig),
        Assignment(arts[4].id, s1, 1.0, "copy", arts[0].id, None),
    ], now=NOW)
    store.record_assignments([
        Assignment(arts[5].id, s1, 1.0, "copy", arts[0].id, None),
        Assignment(arts[5].id, s2, 0.3, "similar", None, None),
    ], now=NOW)
    got = {a.id: a for s in (s1, s2) for a in store.get_story(s).articles}  # type: ignore[union-attr]
    assert (got[arts[1].id].story_id, got[arts[1].id].copy_of, got[arts[1].id].score) == (s2, None, 0.4)
    assert (got[arts[4].id].story_id, got[arts[4].id].copy_of) == (s1, arts[0].id)
    assert (got[arts[5].id].story_id, got[arts[5].id].copy_of, got[arts[5].id].signal) == (s2, None, "similar")
    seqs = [a.id for a, _ in store.clustered_articles()]
    assert seqs[-2:] == [arts[4].id, arts[5].id] and len(seqs) == 6
    assert store.cluster_state().seq == 9
    story1, story2 = store.get_story(s1), store.get_story(s2)
    assert story1 is not None and story2 is not None
    assert (story1.story.article_count, story2.story.article_count) == (3, 3)


def test_sqlite_datetime_processors_match_sqlalchemys(tmp_path: Path) -> None:
    """UTCDateTime's fused SQLite processors give exactly the strings and values of the
    two-step path (the decorator, then SQLite's DATETIME)."""
    import random
    from datetime import datetime, timezone

    from sqlalchemy.dialects import sqlite
    from sqlalchemy.types import TypeDecorator

    from aggregator.storage.tables import UTCDateTime

    dialect = sqlite.dialect()
    column_type = UTCDateTime()
    impl = column_type.dialect_impl(dialect)
    two_step_bind = TypeDecorator.bind_processor(impl, dialect)
    two_step_result = TypeDecorator.result_processor(impl, dialect, None)
    bind = column_type._cached_bind_processor(dialect)
    result = column_type._cached_result_processor(dialect, None)
    assert bind is not None and result is not None and bind is not two_step_bind
    rng = random.Random(7)
    for _ in range(3000):
        zone = rng.choice([timezone.utc, timezone(timedelta(0)), timezone(timedelta(minutes=rng.randint(-720, 720)))])
        value = datetime(rng.randint(1, 9998), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                         rng.randint(0, 59), rng.randint(0, 59), rng.choice([0, rng.randint(0, 999_999)]), tzinfo=zone)
        stored = two_step_bind(value)
        assert bind(value) == stored
        assert result(stored) == two_step_result(stored) and result(stored).tzinfo is timezone.utc
    for text_value in (None, "2026-11-20 12:00:00", "2026-11-20 12:00:00.000001", "2026-11-20"):
        assert result(text_value) == two_step_result(text_value)
    assert bind(None) is None
    with pytest.raises(ValueError, match="naive datetime"):
        bind(datetime(2026, 1, 1))


def test_bulk_writes_match_core_executemany(tmp_path: Path) -> None:
    """``_Bulk`` (SQLite: compiled once, driver-level executemany) writes exactly the rows
    ``conn.execute`` writes, values fixed in the statement and bind processors included,
    and leaves statements with column defaults to fill in to Core."""
    from datetime import timezone

    from sqlalchemy import insert, text

    from aggregator.storage.facade import _ASSIGN_BULK, _Bulk, articles, stories

    def run(use_bulk: bool) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        storage = Storage(f"sqlite:///{tmp_path / f'bulk-{use_bulk}.db'}")
        storage.upgrade()
        feed = storage.add_feed("https://a.example/feed", now=NOW)
        later = NOW.astimezone(timezone(timedelta(hours=-5))) + timedelta(microseconds=7)
        story_rows = [
            {"id": 7, "headline": "H", "created_at": NOW, "updated_at": later, "first_published": later,
             "last_published": NOW, "article_count": 0, "source_count": 0},
            {"id": 9, "headline": "I", "created_at": later, "updated_at": NOW, "first_published": NOW,
             "last_published": later, "article_count": 2, "source_count": 1},
        ]
        # No summary, content_html, text, dated or clustered: column defaults, so Core's path.
        article_rows = [
            {"feed_id": feed.id, "key": f"k{i}", "url": None, "title": f"T{i}", "author": None, "source": "S",
             "published": NOW, "updated": later, "fetched_at": NOW, "content_hash": "h"}
            for i in range(3)
        ]
        assign_rows = [
            {"b_id": i, "b_seq": 10 + i, "b_story": 7 if i % 2 else 9, "b_score": i / 3, "b_signal": "s",
             "b_copy": None if i == 1 else 1}
            for i in (1, 2, 3)
        ]
        with storage.engine.connect() as conn:
            conn.info["write"] = True
            with conn.begin():
                if use_bulk:
                    _Bulk(insert(stories))(conn, story_rows)
                    bulk_articles = _Bulk(insert(articles))
                    bulk_articles(conn, article_rows)
                    assert bulk_articles._plans[conn.dialect][tuple(article_rows[0])] is None
                    _ASSIGN_BULK(conn, assign_rows)
                else:
                    conn.execute(insert(stories), story_rows)
                    conn.execute(insert(articles), article_rows)
                    conn.execute(_ASSIGN_BULK.statement, assign_rows)
            raw_stories = conn.execute(text("SELECT * FROM stories ORDER BY id")).all()
            raw_articles = conn.execute(text("SELECT * FROM articles ORDER BY id")).all()
        storage.close()
        return [tuple(r) for r in raw_stories], [tuple(r) for r in raw_articles]

    core, bulk = run(False), run(True)
    assert bulk == core
    assert core[1][0][13:16] == (1, "h", 1)  # dated, content_hash, clustered (set by the assignment)
