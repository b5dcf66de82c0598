"""The storage facade: one class, plain records in and out, one code path for
SQLite and PostgreSQL.

Transactions: every public method runs in its own transaction unless called
inside ``with storage.batch():``, which holds one transaction (and one
connection) for the calling thread until the block ends; ingest and
clustering use it so that a pass commits as a whole and a crash in the middle
leaves nothing half-written.

On SQLite the database runs in WAL mode (readers never wait for the writer)
and write transactions start with ``BEGIN IMMEDIATE`` so that two processes
(the daemon and a CLI command) queue for the write lock instead of
dead-locking on an upgrade from a read lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    case,
    create_engine,
    delete,
    event,
    func,
    insert,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from aggregator.models import (
    Article,
    ClusteredText,
    Feed,
    FeedState,
    ParsedEntry,
    Story,
    StoryWithArticles,
)
from aggregator.storage import schema
from aggregator.storage.coordination import CoordinationMixin, _bump
from aggregator.storage.operations import OperationsMixin
from aggregator.storage.tables import (
    ArticleRow,
    CorrectionRow,
    FeedRow,
    MetaRow,
    SignatureRow,
    StoryRow,
    aware_utc,
)
from aggregator.storage.websub import WebSubMixin

feeds = FeedRow.__table__
articles = ArticleRow.__table__
stories = StoryRow.__table__
signatures = SignatureRow.__table__
meta = MetaRow.__table__
corrections = CorrectionRow.__table__

_CHUNK = 500  # bound for IN (...) lists
_SEQ_CHUNK = 5000  # Storage._clustered_rows' IN lists of integers (SQLite allows 32,766 variables)


class StorageError(Exception):
    """Base class of the errors the facade raises."""


class StorageUnavailableError(StorageError):
    """The database cannot be reached, is locked for too long, or is read-only/full."""


class SchemaOutOfDateError(StorageError):
    """The database schema is not at the revision this code expects."""


class FeedExistsError(StorageError):
    """A feed with that URL is already subscribed."""

    def __init__(self, feed: Feed):
        super().__init__(f"already subscribed: {feed.url} (feed {feed.id})")
        self.feed = feed


class CorrectionError(StorageError):
    """An operator's correction cannot be applied (unknown or merged story, nothing to split...)."""


@dataclass(frozen=True)
class StoryFilter:
    """What the river shows: every condition given must hold."""

    min_sources: int = 1
    since: datetime | None = None  # latest activity (newest article) at or after this
    feed_id: int | None = None  # stories with an article from this feed
    folder: str | None = None  # stories with an article from a feed in this folder
    text: str | None = None  # full-text search in the articles' titles and summaries


@dataclass(frozen=True)
class StoryPage:
    total: int  # stories matching the filter, all pages
    stories: list[Story]
    summaries: dict[int, str]  # story id -> summary of its headline article (else the first non-empty)


@dataclass(frozen=True)
class FeedStats:
    articles: int
    in_multi_source: int  # articles whose story has two or more outlets

    @property
    def multi_source_share(self) -> float | None:
        return self.in_multi_source / self.articles if self.articles else None


@dataclass(frozen=True)
class Correction:
    """One recorded operator correction."""

    id: int
    created_at: datetime
    by: str
    action: str  # "split": article_id left story_id for the new other_story_id;
    #              "merge": other_story_id was merged into story_id
    story_id: int
    other_story_id: int
    article_id: int | None
    note: str


MAX_SEARCH_TERMS = 8
MAX_TERM_LENGTH = 64
PG_SEARCH_DOCUMENT = (  # exactly the expression of the index ix_articles_search (migration 0002)
    "to_tsvector('simple', coalesce(articles.title, '') || ' ' || coalesce(articles.summary, ''))"
)


def search_terms(query: str | None) -> list[str]:
    """The words of a search query, lower-cased; punctuation and operators are dropped,
    so no input can be a syntax error in either database's query language."""
    if not query:
        return []
    words = re.findall(r"\w+", query.lower())
    return [word[:MAX_TERM_LENGTH] for word in words][:MAX_SEARCH_TERMS]


@dataclass(frozen=True)
class SaveCounts:
    new: int
    updated: int
    unchanged: int


@dataclass(frozen=True)
class StoredSignature:
    params: str
    hashvalues: bytes


@dataclass(frozen=True)
class Assignment:
    """One clustering decision to record."""

    article_id: int
    story_id: int
    score: float
    signal: str
    copy_of: int | None
    signature: StoredSignature | None


_ASSIGN = (
    update(articles)
    .where(articles.c.id == bindparam("b_id"))
    .values(
        clustered=True,
        cluster_seq=bindparam("b_seq"),
        story_id=bindparam("b_story"),
        score=bindparam("b_score"),
        signal=bindparam("b_signal"),
        copy_of=bindparam("b_copy"),
    )
)

_MAX_CLUSTER_SEQ = select(func.coalesce(func.max(articles.c.cluster_seq), 0))


_CREATE_STORY = insert(stories)


class _Bulk:
    """An executemany of one fixed statement (the clustering pass's bulk writes).

    On SQLite the statement is compiled once per set of parameter names and each
    parameter set is turned into a positional tuple, with the same bind processors
    SQLAlchemy applies, and handed to the driver (``exec_driver_sql``): the same SQL
    and values, without Core's per-row parameter construction (measured 7.4 -> 4.6 us
    a row for the assignments' UPDATE). Other databases go through ``conn.execute``.
    Parameter sets must all have the same keys (as an executemany needs anyway).
    """

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        # dialect (weakly: engines come and go) -> parameter names -> (SQL, slots)
        self._plans: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # plans are made once, by whichever thread comes first

    def __call__(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            conn.execute(self.statement, rows)
            return
        keys = tuple(rows[0])
        plans = self._plans.get(conn.dialect)
        plan = False if plans is None else plans.get(keys, False)
        if plan is False:
            with self._lock:
                plans = self._plans.setdefault(conn.dialect, {})
                plan = plans[keys] = self._plan(conn.dialect, keys)
        if plan is None:  # column defaults to fill in: Core's own path
            conn.execute(self.statement, rows)
            return
        sql, slots = plan
        tuples = [
            tuple(
                (const if key is None else (row[key] if proc is None else proc(row[key])))
                for key, proc, const in slots
            )
            for row in rows
        ]
        conn.exec_driver_sql(sql, tuples)

    def _plan(self, dialect: Any, keys: tuple[str, ...]) -> tuple[str, list[tuple[str | None, Any, Any]]] | None:
        """The SQL and, per positional parameter, (key, bind processor, fixed value); None
        where Core's own path is needed. It reads compiler attributes that are not public
        API: should a SQLAlchemy release rename them, Core's path is taken (slower, same rows)."""
        try:
            return self._plan_from(self.statement.compile(dialect=dialect, column_keys=list(keys)), keys)
        except AttributeError:
            return None

    @staticmethod
    def _plan_from(compiled: Any, keys: tuple[str, ...]) -> tuple[str, list[tuple[str | None, Any, Any]]] | None:
        if (
            not compiled.positional
            or compiled.positiontup is None
            or compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.postfetch
            or compiled.returning
            or compiled._post_compile_expanded_state is not None
            or any(bind.expanding for bind in compiled.binds.values())
        ):
            return None
        processors = compiled._bind_processors
        slots: list[tuple[str | None, Any, Any]] = []
        for name in compiled.positiontup:
            proc = processors.get(name)
            if name in keys:
                slots.append((name, proc, None))
            else:  # a value fixed in the statement (``.values(clustered=True)``)
                value = compiled.binds[name].effective_value
                slots.append((None, None, value if proc is None else proc(value)))
        return compiled.string, slots


_ASSIGN_BULK = _Bulk(_ASSIGN)
_CREATE_STORIES_BULK = _Bulk(_CREATE_STORY)
_INSERT_SIGNATURES_BULK = _Bulk(insert(signatures))
_INSERT_ARTICLES_BULK = _Bulk(insert(articles))
_NEXT_STORY_IDS = text("SELECT nextval(pg_get_serial_sequence('stories', 'id')) FROM generate_series(1, :n)")

_REFRESH_EMPTY = (
    update(stories)
    .where(stories.c.id == bindparam("b_id"))
    .values(article_count=bindparam("b_count"), source_count=bindparam("b_sources"), updated_at=bindparam("b_updated"))
)
_REFRESH_FULL = _REFRESH_EMPTY.values(
    headline=bindparam("b_headline"), first_published=bindparam("b_first"), last_published=bindparam("b_last")
)
_REFRESH_EMPTY_BULK = _Bulk(_REFRESH_EMPTY)
_REFRESH_FULL_BULK = _Bulk(_REFRESH_FULL)


# Statements of the clustering pass built once (module level): a statement built per
# call costs its construction and cache-key generation every time (~100 us each,
# several per merge). Lists go through expanding bind parameters.
_IDS = bindparam("b_ids", expanding=True)
_MOVE_ARTICLES = (
    update(articles).where(articles.c.story_id.in_(_IDS)).values(story_id=bindparam("b_into"))
)
_MARK_MERGED = (
    update(stories)
    .where(or_(stories.c.id.in_(_IDS), stories.c.merged_into.in_(_IDS)))
    .values(merged_into=bindparam("b_into"), article_count=0, source_count=0, updated_at=bindparam("b_now"))
)
_SPLITS = select(corrections.c.story_id, corrections.c.other_story_id).where(corrections.c.action == "split")
_LIVE = select(stories.c.id, stories.c.merged_into).where(stories.c.id.in_(_IDS))
_MERGED_INTO = select(stories.c.id).where(stories.c.merged_into.in_(_IDS))
_STORY_STATS = (
    select(
        articles.c.story_id,
        func.count(),
        func.count(func.distinct(func.coalesce(articles.c.source, ""))),
        func.min(articles.c.published),
        func.max(articles.c.published),
    )
    .where(articles.c.story_id.in_(_IDS))
    .group_by(articles.c.story_id)
)
_RANKED = (
    select(
        articles.c.story_id,
        articles.c.title,
        func.row_number()
        .over(partition_by=articles.c.story_id, order_by=(articles.c.published, articles.c.id))
        .label("rank"),
    )
    .where(articles.c.story_id.in_(_IDS))
    .subquery()
)
_STORY_HEADLINES = select(_RANKED.c.story_id, _RANKED.c.title).where(_RANKED.c.rank == 1)
_MAX_ARTICLE_ID = select(func.coalesce(func.max(articles.c.id), 0))
_KEYS = bindparam("b_keys", expanding=True)
_EXISTING = select(articles.c.key, articles.c.id, articles.c.content_hash, articles.c.story_id)
_EXISTING_IN_FEED = _EXISTING.where(articles.c.key.in_(_KEYS), articles.c.feed_id == bindparam("b_feed"))
_EXISTING_NO_FEED = _EXISTING.where(articles.c.key.in_(_KEYS), articles.c.feed_id.is_(None))

# The columns of an Article, in the order of its fields: such a row makes the record
# positionally (``Article(*row)``), several times cheaper than by names (_article).
_ARTICLE_COLUMNS = tuple(articles.c[f.name] for f in dataclasses.fields(Article))
# what Storage.clustered_texts reads (in its unpacking's order)
_TEXT_COLUMNS = (
    *(articles.c[name] for name in ("id", "story_id", "title", "summary", "text", "published", "dated")),
    *(articles.c[name] for name in ("source", "url", "cluster_seq")),
    signatures.c.params,
    signatures.c.hashvalues,
)
# The articles with one of some URLs, by the URL index alone: with ``clustered`` in the
# WHERE clause SQLite's planner took the pending index (clustered, published) and read
# every clustered article (~4-11 ms a chunk at 2,000 articles, growing with the table),
# so the clustered test is done on the few rows found.
_BY_URL = (
    select(*_ARTICLE_COLUMNS, articles.c.clustered)
    .where(articles.c.url.in_(bindparam("b_urls", expanding=True)))
    .order_by(articles.c.published.desc(), articles.c.id.desc())
)
_FTS_INSERT = text(
    "INSERT INTO articles_fts(rowid, title, summary) SELECT id, title, summary FROM articles WHERE id > :after"
)


def index_for_search(conn: Connection, after_id: int) -> None:
    """Add the articles inserted after ``after_id`` (in this transaction) to SQLite's search index.

    One statement for a whole batch (migration 0006 dropped the per-row insert trigger:
    less than half the cost). Every insert into ``articles`` must call this before
    its transaction ends: the FTS5 table mirrors ``articles``, and its delete
    trigger assumes every row it removes was indexed. New rows get the next rowids
    (SQLite's max + 1; a write transaction holds the only write lock). PostgreSQL's
    expression index needs nothing.
    """
    if conn.dialect.name == "sqlite":
        conn.execute(_FTS_INSERT, {"after": after_id})


class NewStories:
    """Stories started by a clustering pass: each id handed out at once, the rows written in bulk.

    :meth:`Storage.create_story` is one INSERT round trip per story, and about a third
    of a news stream's articles start one. A pass only needs the new story's id to go
    on deciding, so :meth:`reserve` hands the id out and :meth:`flush` writes the
    reserved rows in one statement; the pass flushes before it records assignments
    pointing at them (the foreign key) and before a merge.

    Bound to the write transaction it was made in (:meth:`Storage.new_stories`). On
    SQLite the ids are max(id) + 1, + 2, ... (what SQLite itself would pick), safe
    because a write transaction there holds the database's only write lock from its
    BEGIN IMMEDIATE. On PostgreSQL they come from the table's sequence, taken in
    growing blocks (8, 16, ... 256 ``nextval`` in one query), so concurrent creators
    never collide; ids left unused when the pass ends are a gap in the sequence, as a
    rollback leaves.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._rows: list[dict[str, Any]] = []
        self._free: list[int] = []  # PostgreSQL: ids taken from the sequence, not yet handed out
        self._block = 8
        self._next: int | None = None  # SQLite: the next id

    def reserve(self, article: Article, *, now: datetime) -> int:
        """The id of a new, still empty story seeded by ``article`` (written by :meth:`flush`)."""
        conn = self._conn
        if conn.dialect.name == "postgresql":
            if not self._free:
                n = self._block
                self._block = min(256, 2 * n)
                self._free = [int(x) for x in conn.execute(_NEXT_STORY_IDS, {"n": n}).scalars()][::-1]
            story_id = self._free.pop()
        else:
            if self._next is None:
                self._next = int(conn.execute(select(func.coalesce(func.max(stories.c.id), 0))).scalar_one()) + 1
            story_id = self._next
            self._next += 1
        self._rows.append({"id": story_id, **_new_story(article, now)})
        return story_id

    def flush(self) -> None:
        """Write the stories reserved since the last flush."""
        if self._rows:
            _CREATE_STORIES_BULK(self._conn, self._rows)
            self._rows = []


_URL_TAKEN = select(feeds.c.id).where(feeds.c.url == bindparam("b_url"), feeds.c.id != bindparam("b_id"))
_FEED_STATE_STATEMENTS: dict[frozenset[str], Any] = {}


def _save_feed_state(columns: frozenset[str]) -> Any:
    """The UPDATE of a feed's state setting ``columns`` (bound by name; "b_id" is the
    feed), built once per set of columns (a few: title, site_url and url are optional)."""
    statement = _FEED_STATE_STATEMENTS.get(columns)
    if statement is None:
        statement = (
            update(feeds)
            .where(feeds.c.id == bindparam("b_id"))
            .values({name: bindparam(name) for name in sorted(columns) if name != "b_id"})
        )
        _FEED_STATE_STATEMENTS[columns] = statement
    return statement


def _new_story(article: Article, now: datetime) -> dict[str, Any]:
    """The row of a new, still empty story seeded by ``article`` (its id aside)."""
    return {
        "headline": article.title,
        "created_at": now,
        "updated_at": now,
        "first_published": article.published,
        "last_published": article.published,
        "article_count": 0,
        "source_count": 0,
    }


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


class Storage(OperationsMixin, WebSubMixin, CoordinationMixin):
    """All database access of aggregator."""

    def __init__(self, url: str, *, pool_size: int = 5):
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        path = _sqlite_path(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StorageUnavailableError(f"cannot create {path.parent}: {exc}") from None
        self.engine = self._make_engine(url, pool_size)
        self._local = threading.local()
        self._leader_locks = weakref.WeakSet()

    # ------------------------------------------------------------------ engine

    def _make_engine(self, url: str, pool_size: int) -> Engine:
        if self.is_sqlite:
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA foreign_keys=ON")
                with contextlib.suppress(Exception):  # read-only file system: keep the default journal
                    cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            @event.listens_for(engine, "begin")
            def _on_begin(conn: Connection) -> None:
                conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

            return engine
        return create_engine(url, pool_size=pool_size, pool_pre_ping=True)

    def close(self) -> None:
        self._release_leader_locks()  # a clustering leader's lock goes with its storage
        self.engine.dispose()

    @contextlib.contextmanager
    def _tx(self, write: bool = False) -> Iterator[Connection]:
        current: Connection | None = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = write
                with conn.begin():
                    yield conn
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise StorageUnavailableError(_describe(exc)) from exc

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Run every call made by this thread inside the block in one write transaction."""
        if getattr(self._local, "conn", None) is not None:
            yield
            return
        try:
            with self.engine.connect() as conn:
                conn.info["write"] = True
                with conn.begin():
                    self._local.conn = conn
                    try:
                        yield
                    finally:
                        self._local.conn = None
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise StorageUnavailableError(_describe(exc)) from exc

    @contextlib.contextmanager
    def deferred_story_refresh(self) -> Iterator[None]:
        """One write transaction (a :meth:`batch`) in which the stories' derived
        columns (sizes, times, headline, ``updated_at``: see :meth:`_refresh_stories`)
        are recomputed once, when the block ends, instead of at every write.

        A clustering pass writes its decisions in several steps (before every merge
        and at the end of each batch), and recomputing the stories they touch from
        all their articles each time was most of the storage cost of a pass. Inside
        this block a write that would recompute stories only notes them (with the
        ``now`` it was given: the last one wins); the noted stories are recomputed
        when the block ends (before the commit), and a merge first recomputes the
        noted stories it is about to empty. Every story row therefore ends exactly
        as it would have without the block. What runs inside must not read the
        stories' derived columns (they may be out of date until the end); the
        clustering pass reads none. An exception discards the notes with the
        transaction; when the transaction is an outer ``batch()`` of the caller's
        (which may go on), the noted stories are recomputed first."""
        outer = getattr(self._local, "conn", None) is not None
        with self.batch():
            if getattr(self._local, "deferred", None) is not None:  # nested: the outer block refreshes
                yield
                return
            self._local.deferred = {}
            try:
                yield
            except BaseException:
                noted: dict[int, datetime] = self._local.deferred
                self._local.deferred = None
                if outer and noted:
                    with contextlib.suppress(Exception):  # the first error is the one to report
                        self._recompute_stories(self._local.conn, noted)
                raise
            else:
                noted = self._local.deferred
                self._local.deferred = None
                if noted:
                    self._recompute_stories(self._local.conn, noted)
            finally:
                self._local.deferred = None

    # ------------------------------------------------------------------ schema

    def upgrade(self) -> None:
        """Apply the Alembic migrations up to head."""
        try:
            schema.upgrade(self.engine)
        except (OperationalError, DBAPIError) as exc:
            raise StorageUnavailableError(_describe(exc)) from exc

    def schema_status(self) -> tuple[str | None, str]:
        """(current revision, head revision)."""
        try:
            return schema.current_revision(self.engine), schema.head_revision()
        except (OperationalError, DBAPIError) as exc:
            raise StorageUnavailableError(_describe(exc)) from exc

    def ensure_schema(self, *, auto_upgrade: bool) -> None:
        """Upgrade (when allowed) or refuse to work on an out-of-date schema."""
        current, head = self.schema_status()
        if current == head:
            return
        if auto_upgrade:
            self.upgrade()
            return
        raise SchemaOutOfDateError(
            f"database schema is at {current or 'nothing'}, this version needs {head}: "
            "run `aggregator db upgrade`"
        )

    def ping(self) -> None:
        with self._tx() as conn:
            conn.execute(select(1))

    def get_meta(self, key: str) -> str | None:
        with self._tx() as conn:
            return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()

    def set_meta(self, key: str, value: str) -> None:
        with self._tx(write=True) as conn:
            if conn.execute(select(meta.c.key).where(meta.c.key == key)).first():
                conn.execute(update(meta).where(meta.c.key == key).values(value=value))
            else:
                conn.execute(insert(meta).values(key=key, value=value))

    def cluster_generation(self) -> int:
        """A counter that every clustering pass increments (see ``aggregator.ingest``)."""
        value = self.get_meta("cluster_generation")
        return int(value) if value else 0

    def bump_cluster_generation(self) -> int:
        generation = self.cluster_generation() + 1
        self.set_meta("cluster_generation", str(generation))
        return generation

    # ------------------------------------------------------------------ feeds

    def add_feed(
        self,
        url: str,
        *,
        now: datetime,
        folder: str | None = None,
        title: str | None = None,
        min_interval: int | None = None,
        max_interval: int | None = None,
    ) -> Feed:
        try:
            with self._tx(write=True) as conn:
                existing = conn.execute(select(feeds).where(feeds.c.url == url)).first()
                if existing is not None:
                    raise FeedExistsError(self._feed(existing))
                feed_id = conn.execute(
                    insert(feeds).values(
                        url=url,
                        title=title,
                        folder=folder,
                        added_at=now,
                        next_check_at=now,
                        error_count=0,
                        min_interval=min_interval,
                        max_interval=max_interval,
                    )
                ).inserted_primary_key[0]
                row = conn.execute(select(feeds).where(feeds.c.id == feed_id)).one()
                return self._feed(row)
        except IntegrityError:
            # Another process subscribed the same URL at the same moment (PostgreSQL).
            found = None if getattr(self._local, "conn", None) is not None else self.get_feed_by_url(url)
            if found is None:
                raise
            raise FeedExistsError(found) from None

    def get_feed(self, feed_id: int) -> Feed | None:
        with self._tx() as conn:
            row = conn.execute(select(feeds).where(feeds.c.id == feed_id)).first()
            return None if row is None else self._feed(row, self._article_counts(conn, [feed_id]))

    def get_feed_by_url(self, url: str) -> Feed | None:
        with self._tx() as conn:
            row = conn.execute(select(feeds).where(feeds.c.url == url)).first()
            return None if row is None else self._feed(row)

    def list_feeds(self) -> list[Feed]:
        with self._tx() as conn:
            rows = conn.execute(select(feeds).order_by(feeds.c.id)).all()
            counts = self._article_counts(conn, None)
            return [self._feed(row, counts) for row in rows]

    def remove_feed(self, feed_id: int) -> bool:
        """Unsubscribe. The feed's articles and stories stay (their source name is kept)."""
        with self._tx(write=True) as conn:
            result = conn.execute(delete(feeds).where(feeds.c.id == feed_id))
            return result.rowcount > 0

    FEED_SETTINGS = ("folder", "title", "min_interval", "max_interval")

    def set_feed(
        self, feed_id: int, *, resume: bool = False, now: datetime | None = None, **changes: Any
    ) -> Feed | None:
        """Change a feed's ``folder``, ``title``, ``min_interval`` or ``max_interval``
        (None clears one). ``resume`` (needs ``now``) clears a stop (410 Gone) and
        the error count and makes the feed due at ``now``. None when no such feed."""
        unknown = sorted(set(changes) - set(self.FEED_SETTINGS))
        if unknown:
            raise TypeError(f"set_feed cannot change {', '.join(unknown)}")
        values: dict[str, Any] = dict(changes)
        if resume:
            if now is None:
                raise TypeError("set_feed(resume=True) needs now")
            values.update(stopped=None, next_check_at=now, error_count=0, last_error=None)
        with self._tx(write=True) as conn:
            if values:
                conn.execute(update(feeds).where(feeds.c.id == feed_id).values(**values))
            row = conn.execute(select(feeds).where(feeds.c.id == feed_id)).first()
            return None if row is None else self._feed(row, self._article_counts(conn, [feed_id]))

    def due_feeds(self, now: datetime, limit: int) -> list[Feed]:
        """Feeds whose next check has come, soonest first; stopped feeds (410 Gone) never."""
        with self._tx() as conn:
            rows = conn.execute(
                select(feeds)
                .where(feeds.c.next_check_at <= now, feeds.c.stopped.is_(None))
                .order_by(feeds.c.next_check_at, feeds.c.id)
                .limit(limit)
            ).all()
            return [self._feed(row) for row in rows]

    def save_feed_state(self, feed_id: int, state: FeedState) -> None:
        values: dict[str, Any] = {
            "b_id": feed_id,
            "etag": state.etag,
            "last_modified": state.last_modified,
            "last_fetched_at": state.last_fetched_at,
            "last_success_at": state.last_success_at,
            "next_check_at": state.next_check_at,
            "error_count": state.error_count,
            "last_error": state.last_error,
            "stopped": state.stopped,
            "poll_hints": state.poll_hints,
        }
        if state.title:
            values["title"] = state.title
        if state.site_url:
            values["site_url"] = state.site_url
        with self._tx(write=True) as conn:
            if state.url:
                taken = conn.execute(_URL_TAKEN, {"b_url": state.url, "b_id": feed_id}).first()
                if taken is None:
                    values["url"] = state.url
            conn.execute(_save_feed_state(frozenset(values)), values)

    def _article_counts(self, conn: Connection, feed_ids: list[int] | None) -> dict[int, int]:
        query = select(articles.c.feed_id, func.count()).group_by(articles.c.feed_id)
        if feed_ids is not None:
            query = query.where(articles.c.feed_id.in_(feed_ids))
        return {feed_id: count for feed_id, count in conn.execute(query) if feed_id is not None}

    @staticmethod
    def _feed(row: Any, counts: dict[int, int] | None = None) -> Feed:
        return Feed(
            id=row.id,
            url=row.url,
            title=row.title,
            site_url=row.site_url,
            folder=row.folder,
            added_at=row.added_at,
            etag=row.etag,
            last_modified=row.last_modified,
            last_fetched_at=row.last_fetched_at,
            last_success_at=row.last_success_at,
            next_check_at=row.next_check_at,
            error_count=row.error_count,
            last_error=row.last_error,
            article_count=(counts or {}).get(row.id, 0),
            min_interval=row.min_interval,
            max_interval=row.max_interval,
            stopped=row.stopped,
            poll_hints=row.poll_hints,
        )

    # ------------------------------------------------------------------ articles

    def save_entries(
        self,
        feed_id: int | None,
        entries: Sequence[ParsedEntry],
        *,
        source: str | None,
        fetched_at: datetime,
        sources: Sequence[str | None] | None = None,
    ) -> SaveCounts:
        """Insert new entries, update changed ones in place, skip unchanged ones.

        An entry is identified by (feed, key). A changed entry keeps its id, its
        story and its first ``published`` time; its story's ``updated_at`` moves.
        ``sources``, when given, names each entry's outlet (replays of labelled
        data); otherwise every entry gets ``source``. Entries that retention
        removed (tombstones) are skipped.
        """
        new = updated = unchanged = 0
        with self._tx(write=True) as conn:
            existing: dict[str, tuple[int, str, int | None]] = {}
            keys = [entry.key for entry in entries]
            lookup = _EXISTING_IN_FEED if feed_id is not None else _EXISTING_NO_FEED
            for chunk in _chunks(keys):
                for key, article_id, content_hash, story_id in conn.execute(
                    lookup, {"b_keys": list(chunk), "b_feed": feed_id}
                ):
                    existing[key] = (article_id, content_hash, story_id)
            removed = self.tombstoned_keys(conn, feed_id, keys) if feed_id is not None else set()
            inserts = []
            touched_stories: set[int] = set()
            for position, entry in enumerate(entries):
                known = existing.get(entry.key)
                if entry.key in removed:  # removed by retention: never comes back
                    unchanged += 1
                elif known is None:
                    inserts.append(
                        {
                            "feed_id": feed_id,
                            "key": entry.key,
                            "url": entry.link,
                            "title": entry.title,
                            "summary": entry.summary,
                            "content_html": entry.content_html,
                            "text": entry.text,
                            "author": entry.author,
                            "source": sources[position] if sources is not None else source,
                            "published": entry.published,
                            "updated": entry.updated,
                            "fetched_at": fetched_at,
                            "dated": entry.dated,
                            "content_hash": entry.content_hash,
                            "clustered": False,
                        }
                    )
                    existing[entry.key] = (0, entry.content_hash, None)
                    new += 1
                elif known[1] != entry.content_hash:
                    conn.execute(
                        update(articles)
                        .where(articles.c.id == known[0])
                        .values(
                            url=entry.link,
                            title=entry.title,
                            summary=entry.summary,
                            content_html=entry.content_html,
                            text=entry.text,
                            author=entry.author,
                            updated=max(entry.updated, entry.published),
                            fetched_at=fetched_at,
                            content_hash=entry.content_hash,
                        )
                    )
                    if known[2] is not None:
                        touched_stories.add(known[2])
                    updated += 1
                else:
                    unchanged += 1
            if inserts:
                before = conn.execute(_MAX_ARTICLE_ID).scalar_one() if self.is_sqlite else 0
                _INSERT_ARTICLES_BULK(conn, inserts)
                index_for_search(conn, before)
            self._refresh_stories(conn, sorted(touched_stories), fetched_at)
        return SaveCounts(new=new, updated=updated, unchanged=unchanged)

    def get_article(self, article_id: int) -> Article | None:
        with self._tx() as conn:
            row = conn.execute(select(articles).where(articles.c.id == article_id)).first()
            return None if row is None else self._article(row)

    def pending_articles(self, limit: int) -> list[Article]:
        """Stored articles not yet clustered, in arrival order (published, then id)."""
        with self._tx() as conn:
            rows = conn.execute(
                select(*_ARTICLE_COLUMNS)
                .where(articles.c.clustered.is_(False))
                .order_by(articles.c.published, articles.c.id)
                .limit(limit)
            ).all()
            return [Article(*row) for row in rows]

    def clustered_articles(
        self, since: datetime | None = None, batch_size: int = 2000, *, after_seq: int | None = None
    ) -> Iterator[tuple[Article, StoredSignature | None]]:
        """Clustered articles in the order they were clustered, with their stored
        signatures; ``since`` keeps those published at or after it, ``after_seq``
        those clustered after that ``cluster_seq``. Streams in batches."""
        columns = (articles, signatures.c.params, signatures.c.hashvalues)
        for row in self._clustered_rows(columns, since, after_seq, batch_size):
            signature = StoredSignature(row.params, row.hashvalues) if row.hashvalues is not None else None
            yield self._article(row), signature

    def clustered_texts(
        self, since: datetime | None = None, batch_size: int = 5000, *, after_seq: int | None = None
    ) -> Iterator[ClusteredText]:
        """:meth:`clustered_articles` as a clustering rebuild or catch-up reads them: the
        columns the clusterer needs, not the stored HTML (a third of the cost of a
        headline's row, more of a full text's)."""
        for row in self._clustered_rows(_TEXT_COLUMNS, since, after_seq, batch_size):
            id_, story_id, title, summary, text_, published, dated, source, url, seq, params, hv = row[:12]
            yield ClusteredText(
                id_, story_id, title, text_ or summary, published if dated else None, source, url, seq, params, hv
            )

    def _clustered_rows(
        self, columns: Sequence[Any], since: datetime | None, after_seq: int | None, batch_size: int
    ) -> Iterator[Any]:
        """Rows of ``columns`` (then three of this method's) of the clustered articles, in
        ``cluster_seq`` order, ``batch_size`` at a time (a short transaction each).

        First the ``cluster_seq`` of every article to read, in one query; then the rows
        by those values alone, on the ``cluster_seq`` index, the other conditions checked
        here: SQLite's planner, given ``clustered`` (or ``published``) in the WHERE
        clause, takes the (clustered, published) index for every page and reads every
        clustered article (with ``ORDER BY ... LIMIT`` pages, or ``IN`` lists alike):
        7 s instead of 0.5 for a restart's 214,000 rows with a million stored.
        """
        where = [articles.c.clustered.is_(True), articles.c.story_id.is_not(None)]
        if since is not None:
            where.append(articles.c.published >= since)
        if after_seq is not None:
            where.append(articles.c.cluster_seq > after_seq)
        with self._tx() as conn:
            seqs = conn.execute(select(articles.c.cluster_seq).where(*where).order_by(articles.c.cluster_seq)).scalars().all()
        query = (
            select(*columns, articles.c.clustered, articles.c.story_id, articles.c.cluster_seq)
            .outerjoin(signatures, signatures.c.article_id == articles.c.id)
            .where(articles.c.cluster_seq.in_(bindparam("b_seqs", expanding=True)))
            .order_by(articles.c.cluster_seq)
        )
        for chunk in _chunks(seqs, min(batch_size, _SEQ_CHUNK)):
            with self._tx() as conn:
                rows = conn.execute(query, {"b_seqs": list(chunk)}).all()
            for row in rows:
                if row[-3] and row[-2] is not None:  # still clustered (a split may have intervened)
                    yield row

    def window_stories(self, since: datetime, cutoff: datetime) -> set[int]:
        """The stories of the clustered articles published at or after ``since`` that have
        one published at or after ``cutoff`` or one without a date (a rebuild restores the
        others' articles as leaving the window before it ends)."""
        with self._tx() as conn:
            return set(
                conn.execute(
                    select(articles.c.story_id)
                    .where(
                        articles.c.clustered.is_(True),
                        articles.c.story_id.is_not(None),
                        articles.c.published >= since,
                        or_(articles.c.published >= cutoff, articles.c.dated.is_(False)),
                    )
                    .distinct()
                ).scalars()
            )

    def latest_published(self, *, dated_since: datetime | None = None) -> datetime | None:
        """The newest ``published`` time among clustered articles; with ``dated_since``,
        among those that have a date of their own published at or after it."""
        query = select(func.max(articles.c.published)).where(articles.c.clustered.is_(True))
        if dated_since is not None:
            query = query.where(articles.c.dated.is_(True), articles.c.published >= dated_since)
        with self._tx() as conn:
            return aware_utc(conn.execute(query).scalar())

    def articles_by_url(self, urls: Iterable[str]) -> dict[str, Article]:
        """For each canonical URL, the earliest clustered article stored with it (from any feed)."""
        found: dict[str, Article] = {}
        wanted = sorted(set(urls))
        with self._tx() as conn:
            for chunk in _chunks(wanted):
                for *columns, clustered in conn.execute(_BY_URL, {"b_urls": list(chunk)}):
                    # newest first, so the earliest wins
                    article = Article(*columns)
                    if clustered and article.story_id is not None:
                        found[article.url] = article  # type: ignore[index]
        return found

    @staticmethod
    def _article(row: Any) -> Article:
        return Article(
            id=row.id,
            feed_id=row.feed_id,
            key=row.key,
            url=row.url,
            title=row.title,
            summary=row.summary,
            content_html=row.content_html,
            text=row.text,
            author=row.author,
            source=row.source,
            published=row.published,
            updated=row.updated,
            fetched_at=row.fetched_at,
            content_hash=row.content_hash,
            story_id=row.story_id,
            score=row.score,
            signal=row.signal,
            copy_of=row.copy_of,
            dated=row.dated,
        )

    # ------------------------------------------------------------------ clustering writes

    def create_story(self, article: Article, *, now: datetime) -> int:
        """A new, still empty story seeded by ``article``; returns its id."""
        with self._tx(write=True) as conn:
            # Values as execute parameters, not .values(): the statement's compiled
            # form is then cached (measured: ~4x cheaper per story in a clustering pass).
            story_id = conn.execute(_CREATE_STORY, _new_story(article, now)).inserted_primary_key[0]
            assert story_id is not None
            return int(story_id)

    def new_stories(self) -> NewStories:
        """Story ids for a clustering pass, their rows written in bulk: see :class:`NewStories`.

        Only inside a write transaction of this thread (:meth:`batch`,
        :meth:`deferred_story_refresh`)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            raise RuntimeError("new_stories() needs the write transaction of batch()")
        return NewStories(conn)

    def record_assignments(self, assignments: Sequence[Assignment], *, now: datetime) -> None:
        """Record clustering decisions in bulk, in the order they were taken, and
        refresh each story they touch once."""
        if not assignments:
            return
        with self._tx(write=True) as conn:
            seq = conn.execute(_MAX_CLUSTER_SEQ).scalar_one()
            rows = [
                {
                    "b_id": item.article_id,
                    "b_seq": seq + offset,
                    "b_story": item.story_id,
                    "b_score": item.score,
                    "b_signal": item.signal,
                    "b_copy": item.copy_of,
                }
                for offset, item in enumerate(assignments, start=1)
            ]
            _ASSIGN_BULK(conn, rows)
            signed = [item for item in assignments if item.signature is not None]
            if signed:
                for chunk in _chunks([item.article_id for item in signed]):
                    conn.execute(delete(signatures).where(signatures.c.article_id.in_(chunk)))
                _INSERT_SIGNATURES_BULK(
                    conn,
                    [
                        {
                            "article_id": item.article_id,
                            "params": item.signature.params,  # type: ignore[union-attr]
                            "hashvalues": item.signature.hashvalues,  # type: ignore[union-attr]
                        }
                        for item in signed
                    ],
                )
            self._refresh_stories(conn, sorted({item.story_id for item in assignments}), now)

    def assign(
        self,
        article: Article,
        story_id: int | None,
        *,
        score: float,
        signal: str,
        copy_of: int | None,
        signature: StoredSignature | None,
        now: datetime,
    ) -> int:
        """Record the clustering decision for one article; create the story when
        ``story_id`` is None. Returns the story id."""
        with self.batch():
            if story_id is None:
                story_id = self.create_story(article, now=now)
            self.record_assignments(
                [Assignment(article.id, story_id, score, signal, copy_of, signature)], now=now
            )
            return story_id

    def merge_stories(
        self, into: int, others: Iterable[int], *, now: datetime, by: str | None = None
    ) -> list[int]:
        """Move every article of ``others`` into ``into``; the others point at it.
        Returns the stories actually merged.

        ``by=None`` is the automatic clustering: it never undoes an operator's
        split, so a story is left out when merging it would put a split
        article back with the story it was split from. ``by`` names an
        operator: the stories must exist and be live (else
        :class:`CorrectionError`), and the merge is recorded in ``corrections``.
        """
        others = list(dict.fromkeys(other for other in others if other != into))
        if not others:
            return []
        with self._tx(write=True) as conn:
            if by is None:
                others = self._mergeable(conn, into, others)
                if not others:
                    return []
            else:
                for story_id in (into, *others):
                    found = conn.execute(
                        select(stories.c.merged_into).where(stories.c.id == story_id)
                    ).first()
                    if found is None:
                        raise CorrectionError(f"there is no story {story_id}")
                    if found.merged_into is not None:
                        raise CorrectionError(
                            f"story {story_id} was already merged into story {found.merged_into}"
                        )
            self._refresh_noted(conn, others)
            conn.execute(_MOVE_ARTICLES, {"b_ids": others, "b_into": into})
            conn.execute(_MARK_MERGED, {"b_ids": others, "b_into": into, "b_now": now})
            self._refresh_stories(conn, [into], now)
            if by is not None:
                conn.execute(
                    insert(corrections),
                    [
                        {
                            "created_at": now,
                            "by": by,
                            "action": "merge",
                            "story_id": into,
                            "other_story_id": other,
                            "article_id": None,
                            "note": "",
                        }
                        for other in others
                    ],
                )
                self._bump_generation(conn)
        return others

    def _mergeable(self, conn: Connection, into: int, others: list[int]) -> list[int]:
        """``others`` minus the stories whose merge would undo a recorded split."""
        splits = conn.execute(_SPLITS).all()
        if not splits:
            return others
        ids = sorted({story_id for pair in splits for story_id in pair})
        live: dict[int, int] = {}
        for chunk in _chunks(ids):
            for row in conn.execute(_LIVE, {"b_ids": list(chunk)}):
                live[row.id] = row.merged_into or row.id
        apart = set()
        for left, right in splits:
            a, b = live.get(left, left), live.get(right, right)
            if a != b:  # an operator's later merge of the two overrides the split
                apart.add(frozenset((a, b)))
        group = {into}
        accepted = []
        for other in others:
            if any(frozenset((member, other)) in apart for member in group):
                continue
            group.add(other)
            accepted.append(other)
        return accepted

    def split_article(self, article_id: int, *, now: datetime, by: str) -> int:
        """Move an article (with its exact copies) out of its story into a new story;
        returns the new story's id.

        The split is recorded in ``corrections`` and kept: articles are never
        re-clustered, and the automatic clustering never merges the two stories
        again (see :meth:`merge_stories`). The cluster generation moves, so every
        process rebuilds its index from the stored story ids before its next pass.
        Both stories' ``updated_at`` move, so their feeds change.
        """
        with self._tx(write=True) as conn:
            row = conn.execute(select(articles).where(articles.c.id == article_id)).first()
            if row is None:
                raise CorrectionError(f"there is no article {article_id}")
            if row.story_id is None:
                raise CorrectionError(f"article {article_id} is not in a story yet")
            source_story = row.story_id
            moving = [article_id] + list(
                conn.execute(
                    select(articles.c.id).where(
                        articles.c.copy_of == article_id, articles.c.story_id == source_story
                    )
                ).scalars()
            )
            remaining = conn.execute(
                select(func.count()).select_from(articles).where(
                    articles.c.story_id == source_story, articles.c.id.not_in(moving)
                )
            ).scalar_one()
            if not remaining:
                raise CorrectionError(
                    f"article {article_id} and its copies are all of story {source_story}: nothing to split"
                )
            new_story = conn.execute(
                insert(stories).values(
                    headline=row.title,
                    created_at=now,
                    updated_at=now,
                    first_published=row.published,
                    last_published=row.published,
                    article_count=0,
                    source_count=0,
                )
            ).inserted_primary_key[0]
            assert new_story is not None
            conn.execute(update(articles).where(articles.c.id.in_(moving)).values(story_id=new_story))
            # Why it is in its new story: the operator said so. What the clustering had
            # decided stays in the correction's note.
            conn.execute(
                update(articles)
                .where(articles.c.id == article_id)
                .values(signal="split", score=None, copy_of=None)
            )
            score = "" if row.score is None else f" {row.score:.3f}"
            conn.execute(
                insert(corrections).values(
                    created_at=now,
                    by=by,
                    action="split",
                    story_id=source_story,
                    other_story_id=new_story,
                    article_id=article_id,
                    note=f"clustering had decided: {row.signal or 'unknown'}{score}",
                )
            )
            self._refresh_stories(conn, [source_story, int(new_story)], now)
            self._bump_generation(conn)
            return int(new_story)

    def _bump_generation(self, conn: Connection) -> None:
        _bump(conn, "cluster_epoch")  # a structural change: other processes must rebuild, not catch up
        found = conn.execute(select(meta.c.value).where(meta.c.key == "cluster_generation")).scalar()
        value = str(int(found or 0) + 1)
        if found is None:
            conn.execute(insert(meta).values(key="cluster_generation", value=value))
        else:
            conn.execute(update(meta).where(meta.c.key == "cluster_generation").values(value=value))

    def corrections_for(self, story_id: int) -> list[Correction]:
        """The corrections that touched a story, oldest first."""
        with self._tx() as conn:
            rows = conn.execute(
                select(corrections)
                .where(or_(corrections.c.story_id == story_id, corrections.c.other_story_id == story_id))
                .order_by(corrections.c.created_at, corrections.c.id)
            ).all()
            return [self._correction(row) for row in rows]

    def list_corrections(self, limit: int = 100) -> list[Correction]:
        """The latest corrections, newest first."""
        with self._tx() as conn:
            rows = conn.execute(
                select(corrections).order_by(corrections.c.id.desc()).limit(limit)
            ).all()
            return [self._correction(row) for row in rows]

    @staticmethod
    def _correction(row: Any) -> Correction:
        return Correction(
            id=row.id,
            created_at=row.created_at,
            by=row.by,
            action=row.action,
            story_id=row.story_id,
            other_story_id=row.other_story_id,
            article_id=row.article_id,
            note=row.note,
        )

    def _refresh_stories(self, conn: Connection, story_ids: Sequence[int], now: datetime) -> None:
        """Recompute the stories' derived columns from their articles, with
        ``updated_at`` set to ``now``; inside :meth:`deferred_story_refresh` only
        note them (recomputed when that block ends)."""
        noted: dict[int, datetime] | None = getattr(self._local, "deferred", None)
        if noted is not None:
            noted.update(dict.fromkeys(story_ids, now))
            return
        self._recompute_stories(conn, {story_id: now for story_id in story_ids})

    def _refresh_noted(self, conn: Connection, others: Sequence[int]) -> None:
        """Before a merge of ``others`` (inside :meth:`deferred_story_refresh`):
        recompute now the noted stories whose rows the merge overwrites (``others``
        and the stories merged into them), while they still hold their articles."""
        noted: dict[int, datetime] | None = getattr(self._local, "deferred", None)
        if not noted:
            return
        affected = set(others)
        for chunk in _chunks(list(others)):
            affected.update(conn.execute(_MERGED_INTO, {"b_ids": list(chunk)}).scalars())
        due = {story_id: noted.pop(story_id) for story_id in list(noted) if story_id in affected}
        if due:
            self._recompute_stories(conn, due)

    def _recompute_stories(self, conn: Connection, updated: dict[int, datetime]) -> None:
        """Recompute the stories' derived columns from their articles: per chunk
        one aggregate query, one headline query and one executemany UPDATE.
        ``updated``: story id -> its new ``updated_at``.

        Headline rule: the title of the story's earliest article (the first
        report), ties broken by id, so it does not flicker as copies arrive.
        """
        for chunk in _chunks(sorted(updated)):
            ids = {"b_ids": list(chunk)}
            stats = {row[0]: row for row in conn.execute(_STORY_STATS, ids)}
            headlines = dict(conn.execute(_STORY_HEADLINES, ids).all())
            full, empty = [], []
            for story_id in chunk:
                row = stats.get(story_id)
                if row is None:
                    empty.append({"b_id": story_id, "b_count": 0, "b_sources": 0, "b_updated": updated[story_id]})
                else:
                    full.append(
                        {
                            "b_id": story_id,
                            "b_count": row[1],
                            "b_sources": row[2],
                            "b_updated": updated[story_id],
                            "b_headline": headlines.get(story_id),
                            "b_first": aware_utc(row[3]),
                            "b_last": aware_utc(row[4]),
                        }
                    )
            if full:
                _REFRESH_FULL_BULK(conn, full)
            if empty:
                _REFRESH_EMPTY_BULK(conn, empty)

    # ------------------------------------------------------------------ stories

    def list_stories(
        self, *, limit: int, offset: int = 0, min_sources: int = 1, order: str = "updated"
    ) -> list[Story]:
        """Live (not merged) stories with latest activity (newest article) first
        (``order="updated"``), or with the most sources first (``order="sources"``)."""
        query = select(stories).where(
            stories.c.merged_into.is_(None), stories.c.source_count >= min_sources
        )
        if order == "sources":
            query = query.order_by(
                stories.c.source_count.desc(), stories.c.last_published.desc(), stories.c.id.desc()
            )
        else:
            query = query.order_by(stories.c.last_published.desc(), stories.c.id.desc())
        with self._tx() as conn:
            rows = conn.execute(query.limit(limit).offset(offset)).all()
            sources = self._story_sources(conn, [row.id for row in rows])
            return [self._story(row, sources.get(row.id, ())) for row in rows]

    def count_stories(self, *, min_sources: int = 1) -> int:
        with self._tx() as conn:
            return conn.execute(
                select(func.count())
                .select_from(stories)
                .where(stories.c.merged_into.is_(None), stories.c.source_count >= min_sources)
            ).scalar_one()

    def story_record(self, story_id: int, *, sources: bool = True) -> Story | None:
        """A story without its articles (merged ones too): what a feed's
        conditional GET needs to decide, without reading any article.
        ``sources=False`` leaves ``Story.sources`` empty and reads the story row
        alone (a 304 then costs one indexed lookup instead of a scan of the
        story's articles: measured 0.96 -> 0.5 ms per 304 of a 60-article story)."""
        with self._tx() as conn:
            row = conn.execute(select(stories).where(stories.c.id == story_id)).first()
            if row is None:
                return None
            names = self._story_sources(conn, [story_id]) if sources else {}
            return self._story(row, names.get(story_id, ()))

    def get_story(self, story_id: int) -> StoryWithArticles | None:
        """A story with its articles, oldest first. A merged story comes back with
        ``merged_into`` set and no articles."""
        with self._tx() as conn:
            row = conn.execute(select(stories).where(stories.c.id == story_id)).first()
            if row is None:
                return None
            rows = conn.execute(
                select(articles)
                .where(articles.c.story_id == story_id)
                .order_by(articles.c.published, articles.c.id)
            ).all()
            sources = self._story_sources(conn, [story_id])
            return StoryWithArticles(
                story=self._story(row, sources.get(story_id, ())),
                articles=tuple(self._article(r) for r in rows),
            )

    def iter_stories(self, batch_size: int = 500) -> Iterator[StoryWithArticles]:
        """Every live story with its articles, by id."""
        last_id = 0
        while True:
            with self._tx() as conn:
                ids = conn.execute(
                    select(stories.c.id)
                    .where(stories.c.merged_into.is_(None), stories.c.id > last_id, stories.c.article_count > 0)
                    .order_by(stories.c.id)
                    .limit(batch_size)
                ).scalars().all()
            if not ids:
                return
            for story_id in ids:
                found = self.get_story(story_id)
                if found is not None:
                    yield found
            last_id = ids[-1]

    def story_assignments(self) -> list[tuple[int | None, str, int]]:
        """(feed id, key, story id) of every article of a live story: what
        :meth:`iter_stories` yields, as identifiers only and in the same order (by
        story id, then published, then article id), in one query instead of
        three per story."""
        query = (
            select(articles.c.feed_id, articles.c.key, articles.c.story_id)
            .join(stories, stories.c.id == articles.c.story_id)
            .where(stories.c.merged_into.is_(None), stories.c.article_count > 0)
            .order_by(articles.c.story_id, articles.c.published, articles.c.id)
        )
        with self._tx() as conn:
            return [(row[0], row[1], row[2]) for row in conn.execute(query)]

    def find_stories(
        self, flt: StoryFilter, *, limit: int, offset: int = 0, order: str = "updated", details: bool = True
    ) -> StoryPage:
        """One page of live stories matching ``flt``, ordered as :meth:`list_stories`
        does, with the total and each story's one-line summary.

        ``details=False`` leaves out what only pages show (each story's sources and
        summary): the feeds validate and render from the story rows alone, and those
        two queries were most of the cost of a river 304 (measured 23 -> 6 ms with
        2,000 stories).

        Text search is the database's own full-text search: SQLite FTS5
        (``articles_fts``) on the embedded default, ``to_tsvector``/``to_tsquery``
        with the ``simple`` configuration (GIN index ``ix_articles_search``) on
        PostgreSQL. Both match every word of the query as a prefix, case- and
        (on SQLite) accent-insensitively, in any article's title or summary.
        """
        conditions: list[Any] = [
            stories.c.merged_into.is_(None),
            stories.c.source_count >= flt.min_sources,
            stories.c.article_count > 0,
        ]
        if flt.since is not None:
            conditions.append(stories.c.last_published >= flt.since)
        if flt.feed_id is not None:
            conditions.append(
                stories.c.id.in_(select(articles.c.story_id).where(articles.c.feed_id == flt.feed_id))
            )
        if flt.folder is not None:
            conditions.append(
                stories.c.id.in_(
                    select(articles.c.story_id)
                    .join(feeds, feeds.c.id == articles.c.feed_id)
                    .where(feeds.c.folder == flt.folder)
                )
            )
        terms = search_terms(flt.text)
        if flt.text is not None and flt.text.strip() and not terms:
            return StoryPage(total=0, stories=[], summaries={})  # only punctuation: nothing matches
        if terms:
            conditions.append(stories.c.id.in_(self._text_match(terms)))
        query = select(stories).where(*conditions)
        if order == "sources":
            query = query.order_by(
                stories.c.source_count.desc(), stories.c.last_published.desc(), stories.c.id.desc()
            )
        else:
            query = query.order_by(stories.c.last_published.desc(), stories.c.id.desc())
        with self._tx() as conn:
            total = conn.execute(select(func.count()).select_from(stories).where(*conditions)).scalar_one()
            rows = conn.execute(query.limit(limit).offset(offset)).all() if total else []
            ids = [row.id for row in rows]
            sources = self._story_sources(conn, ids) if details else {}
            summaries = self._story_summaries(conn, ids) if details else {}
            return StoryPage(
                total=total,
                stories=[self._story(row, sources.get(row.id, ())) for row in rows],
                summaries=summaries,
            )

    def _text_match(self, terms: list[str]) -> Any:
        """A select of the story ids with an article matching every term (dialect-specific)."""
        dialect = self.engine.dialect.name
        if dialect == "sqlite":
            fts_query = " ".join(f'"{term}"*' for term in terms)
            matching = text("SELECT rowid FROM articles_fts WHERE articles_fts MATCH :fts_query").bindparams(
                fts_query=fts_query
            ).columns(rowid=articles.c.id.type)
            return select(articles.c.story_id).where(articles.c.id.in_(matching))
        if dialect == "postgresql":
            document = literal_column(PG_SEARCH_DOCUMENT)
            tsquery = func.to_tsquery("simple", " & ".join(f"{term}:*" for term in terms))
            return select(articles.c.story_id).where(document.op("@@")(tsquery))
        # Any other database: a plain substring match of every term.
        return select(articles.c.story_id).where(
            *[
                or_(articles.c.title.ilike(f"%{term}%"), articles.c.summary.ilike(f"%{term}%"))
                for term in terms
            ]
        )

    def _story_summaries(self, conn: Connection, story_ids: list[int]) -> dict[int, str]:
        """Each story's summary: its headline article's (the earliest), else the
        earliest non-empty one."""
        found: dict[int, str] = {}
        for chunk in _chunks(story_ids):
            rank = (
                func.row_number()
                .over(
                    partition_by=articles.c.story_id,
                    order_by=(
                        case((articles.c.summary == "", 1), else_=0),
                        articles.c.published,
                        articles.c.id,
                    ),
                )
                .label("rank")
            )
            ranked = (
                select(articles.c.story_id, articles.c.summary, rank)
                .where(articles.c.story_id.in_(chunk))
                .subquery()
            )
            for row in conn.execute(
                select(ranked.c.story_id, ranked.c.summary).where(ranked.c.rank == 1)
            ):
                if row.summary:
                    found[row.story_id] = row.summary
        return found

    def feed_stats(self) -> dict[int, FeedStats]:
        """Per feed: its articles, and how many landed in stories with two or more outlets."""
        multi = func.sum(case((stories.c.source_count >= 2, 1), else_=0))
        query = (
            select(articles.c.feed_id, func.count(), multi)
            .select_from(articles.outerjoin(stories, stories.c.id == articles.c.story_id))
            .where(articles.c.feed_id.is_not(None))
            .group_by(articles.c.feed_id)
        )
        with self._tx() as conn:
            return {
                feed_id: FeedStats(articles=int(count), in_multi_source=int(in_multi or 0))
                for feed_id, count, in_multi in conn.execute(query)
            }

    def feed_choices(self) -> list[tuple[int, str, str | None]]:
        """(id, name, folder) of every subscription, by name: cheap, for pickers."""
        with self._tx() as conn:
            rows = conn.execute(select(feeds.c.id, feeds.c.title, feeds.c.url, feeds.c.folder)).all()
        return _feed_choices(rows)

    def folders(self) -> list[str]:
        """The folders the subscriptions use, sorted."""
        with self._tx() as conn:
            return list(
                conn.execute(
                    select(feeds.c.folder).where(feeds.c.folder.is_not(None)).distinct().order_by(feeds.c.folder)
                ).scalars()
            )

    def counts(self) -> dict[str, int]:
        with self._tx() as conn:
            return {
                "feeds": conn.execute(select(func.count()).select_from(feeds)).scalar_one(),
                "articles": conn.execute(select(func.count()).select_from(articles)).scalar_one(),
                "pending": conn.execute(
                    select(func.count()).select_from(articles).where(articles.c.clustered.is_(False))
                ).scalar_one(),
                "stories": conn.execute(
                    select(func.count())
                    .select_from(stories)
                    .where(stories.c.merged_into.is_(None), stories.c.article_count > 0)
                ).scalar_one(),
            }

    def _story_sources(self, conn: Connection, story_ids: list[int]) -> dict[int, tuple[str, ...]]:
        result: dict[int, list[str]] = {}
        for chunk in _chunks(story_ids):
            rows = conn.execute(
                select(articles.c.story_id, articles.c.source, func.min(articles.c.published).label("first"))
                .where(articles.c.story_id.in_(chunk), articles.c.source.is_not(None))
                .group_by(articles.c.story_id, articles.c.source)
                .order_by(articles.c.story_id, "first", articles.c.source)
            ).all()
            for row in rows:
                result.setdefault(row.story_id, []).append(row.source)
        return {key: tuple(value) for key, value in result.items()}

    @staticmethod
    def _story(row: Any, sources: tuple[str, ...]) -> Story:
        return Story(
            id=row.id,
            headline=row.headline,
            created_at=row.created_at,
            updated_at=row.updated_at,
            first_published=row.first_published,
            last_published=row.last_published,
            article_count=row.article_count,
            source_count=row.source_count,
            sources=sources,
            merged_into=row.merged_into,
        )


def _describe(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    return f"database unavailable: {text[0] if text else type(exc).__name__}"


# --------------------------------------------------------------------------- serving: feed validators
# Added for aggregator.web (conditional GETs of the story feeds and the river); self-contained
# on purpose: functions over Storage, reading through one DBAPI connection per thread on SQLite.

from datetime import timezone  # noqa: E402


@dataclass(frozen=True)
class StoryVersion:
    """What a story feed's validators are made of: no articles, no sources."""

    id: int
    updated_at: datetime
    article_count: int
    merged_into: int | None


_VERSION_SQL = "SELECT id, updated_at, article_count, merged_into FROM stories WHERE id = ?"
_version_lock = threading.Lock()
_UTC = timezone.utc


def story_version(storage: Storage, story_id: int) -> StoryVersion | None:
    """The version of one story: a single primary-key lookup, the whole database
    cost of a story feed's ``304 Not Modified``.

    On a SQLite file each thread keeps its own DBAPI connection for this (reads only)
    (no pool checkout, no SQLAlchemy transaction: one ``SELECT``, read to the end,
    is its own consistent read in WAL mode); measured ~15 us against ~0.5 ms for
    :meth:`Storage.story_record`. Other databases go through ``story_record``."""
    conn = _version_connection(storage)
    if conn is None:
        record = storage.story_record(story_id, sources=False)
        if record is None:
            return None
        return StoryVersion(record.id, record.updated_at, record.article_count, record.merged_into)
    (rows,) = _raw_read(storage, conn, (_VERSION_SQL, (story_id,)))
    if not rows:
        return None
    row = rows[0]
    return StoryVersion(row[0], _version_time(row[1]), row[2], row[3])


# The unary plus keeps SQLite's planner off ix_stories_merged_into (an equality on NULL that
# matches nearly every row, then a sort of them all: 1.4 ms with 1,000 stories) so that it
# walks the ORDER BY's index and stops after the page (0.17 ms).
_LISTING_WHERE = "+merged_into IS NULL AND +source_count >= ? AND +article_count > 0"
_LISTING_ORDER = {
    "updated": "last_published DESC, id DESC",
    "sources": "source_count DESC, last_published DESC, id DESC",
}


def river_versions(
    storage: Storage, flt: StoryFilter, *, limit: int, offset: int = 0, order: str = "updated"
) -> tuple[int, list[StoryVersion]]:
    """(total, versions of the listed stories) of the page :meth:`Storage.find_stories`
    lists for ``flt``: what a river's validators are made of. The plain river
    (``min_sources`` at most, no time range, search, feed or folder) is read on SQLite
    with two statements through the per-thread connection of :func:`story_version`
    (~10x cheaper than ``find_stories``); anything else goes through ``find_stories``.
    ``tests/test_render_cache.py`` checks that both list the same stories."""
    plain = flt.since is None and flt.feed_id is None and flt.folder is None and not flt.text
    conn = _version_connection(storage) if plain and order in _LISTING_ORDER else None
    if conn is None:
        page = storage.find_stories(flt, limit=limit, offset=offset, order=order, details=False)
        return page.total, [StoryVersion(s.id, s.updated_at, s.article_count, None) for s in page.stories]
    total, rows = _raw_read(
        storage,
        conn,
        (f"SELECT count(*) FROM stories WHERE {_LISTING_WHERE}", (flt.min_sources,)),
        (
            f"SELECT id, updated_at, article_count FROM stories WHERE {_LISTING_WHERE} "
            f"ORDER BY {_LISTING_ORDER[order]} LIMIT ? OFFSET ?",
            (flt.min_sources, limit, offset),
        ),
    )
    return int(total[0][0]), [
        StoryVersion(row[0], _version_time(row[1]), row[2], None) for row in rows
    ]


def _raw_read(storage: Storage, conn: Any, *statements: tuple[str, tuple[Any, ...]]) -> list[list[Any]]:
    """The rows of each ``(sql, params)`` on this thread's SQLite connection, every result
    read to the end (no snapshot left open), several statements in one snapshot. On an
    error the connection is dropped (rebuilt next time) and the storage error raised."""
    several = len(statements) > 1
    try:
        if several:
            conn.execute("BEGIN")
        try:
            return [conn.execute(sql, params).fetchall() for sql, params in statements]
        finally:
            if several:
                conn.execute("COMMIT")
    except Exception as exc:  # sqlite3.Error
        storage.__dict__["_version_local"].conn = None
        raise StorageUnavailableError(_describe(exc)) from exc


def _version_time(value: Any) -> datetime:
    found = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return found.replace(tzinfo=_UTC)


def _version_connection(storage: Storage) -> Any:
    """This thread's DBAPI connection to a SQLite file (None on other databases)."""
    local: threading.local | None = storage.__dict__.get("_version_local")
    if local is None:
        with _version_lock:
            local = storage.__dict__.setdefault("_version_local", threading.local())
            storage.__dict__.setdefault(
                "_version_path", _sqlite_path(storage.url) if storage.is_sqlite else None
            )
    path: Path | None = storage.__dict__["_version_path"]
    if path is None:
        return None
    conn = getattr(local, "conn", None)
    if conn is None:
        import sqlite3  # only here: the facade is SQLAlchemy everywhere else

        try:
            conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
        except Exception as exc:
            raise StorageUnavailableError(_describe(exc)) from exc
        local.conn = conn
    return conn


def feed_choices_fast(storage: Storage) -> list[tuple[int, str, str | None]]:
    """:meth:`Storage.feed_choices` through the per-thread connection on SQLite."""
    conn = _version_connection(storage)
    if conn is None:
        return storage.feed_choices()
    (rows,) = _raw_read(storage, conn, ("SELECT id, title, url, folder FROM feeds", ()))
    return _feed_choices(rows)


def _feed_choices(rows: Iterable[Any]) -> list[tuple[int, str, str | None]]:
    """(id, name, folder) by name from (id, title, url, folder) rows: a feed without a title is named by its URL."""
    return sorted(((row[0], row[1] or row[2], row[3]) for row in rows), key=lambda item: item[1].lower())
