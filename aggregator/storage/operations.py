"""The operational part of the storage facade: retention, maintenance, the
figures behind ``aggregator status`` and ``/metrics``, and the daemon's
heartbeat. Mixed into :class:`aggregator.storage.Storage`; like the rest of
the facade it returns plain data and raises only storage errors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, delete, exists, func, insert, select, text, update

from aggregator.storage.tables import ArticleRow, FeedRow, MetaRow, StoryRow, TombstoneRow, aware_utc

articles = ArticleRow.__table__
feeds = FeedRow.__table__
stories = StoryRow.__table__
meta = MetaRow.__table__
tombstones = TombstoneRow.__table__

_CHUNK = 500

_HAS_TOMBSTONES = select(tombstones.c.feed_id).where(tombstones.c.feed_id == bindparam("b_feed")).limit(1)
_TOMBSTONED = select(tombstones.c.key).where(
    tombstones.c.feed_id == bindparam("b_feed"), tombstones.c.key.in_(bindparam("b_keys", expanding=True))
)


@dataclass(frozen=True)
class PurgeReport:
    articles: int
    stories: int
    tombstones_pruned: int


@dataclass(frozen=True)
class FeedProblem:
    id: int
    url: str
    title: str | None
    error_count: int
    last_error: str | None
    next_check_at: datetime


@dataclass(frozen=True)
class Status:
    feeds: int
    feeds_due: int
    feeds_in_error: tuple[FeedProblem, ...]
    articles: int
    articles_24h: int
    stories: int
    stories_24h: int
    pending: int
    index_articles: int  # clustered articles within the clustering window
    last_tick_at: datetime | None
    last_tick_ok: bool | None
    database_bytes: int | None


class OperationsMixin:
    """Retention, maintenance and monitoring figures (see the module docstring)."""

    engine: Any
    is_sqlite: bool
    _tx: Any  # the facade's transaction context manager

    # ------------------------------------------------------------------ heartbeat

    def record_tick(self, at: datetime, *, ok: bool) -> None:
        """Remember when a tick last ended (and whether it worked), for readiness and status."""
        with self._tx(write=True) as conn:
            self._put(conn, "last_tick_ok", "1" if ok else "0")
            if ok:
                self._put(conn, "last_tick_at", at.isoformat())

    def last_tick(self) -> tuple[datetime | None, bool | None]:
        with self._tx() as conn:
            rows = dict(conn.execute(select(meta.c.key, meta.c.value).where(meta.c.key.in_(["last_tick_at", "last_tick_ok"]))).all())
        at = aware_utc(rows.get("last_tick_at"))
        ok = None if "last_tick_ok" not in rows else rows["last_tick_ok"] == "1"
        return at, ok

    @staticmethod
    def _put(conn: Connection, key: str, value: str) -> None:
        if conn.execute(select(meta.c.key).where(meta.c.key == key)).first():
            conn.execute(update(meta).where(meta.c.key == key).values(value=value))
        else:
            conn.execute(insert(meta).values(key=key, value=value))

    # ------------------------------------------------------------------ retention

    def count_before(self, cutoff: datetime) -> int:
        """How many articles were published before ``cutoff`` (what a purge would remove)."""
        with self._tx() as conn:
            return int(
                conn.execute(select(func.count()).select_from(articles).where(articles.c.published < cutoff)).scalar_one()
            )

    def purge_before(
        self,
        cutoff: datetime,
        *,
        now: datetime,
        tombstone_days: float,
        on_progress: Callable[[int], None] | None = None,
    ) -> PurgeReport:
        """Remove articles published before ``cutoff`` with their signatures,
        remember their (feed, key) so that their feeds cannot bring them back,
        remove the stories left empty, and forget tombstones older than
        ``tombstone_days``. One transaction."""
        removed_articles = removed_stories = 0
        with self._tx(write=True) as conn:
            while True:
                rows = conn.execute(
                    select(articles.c.id, articles.c.feed_id, articles.c.key, articles.c.story_id)
                    .where(articles.c.published < cutoff)
                    .limit(_CHUNK)
                ).all()
                if not rows:
                    break
                ids = [row.id for row in rows]
                marks = [
                    {"feed_id": row.feed_id, "key": row.key, "removed_at": now}
                    for row in rows
                    if row.feed_id is not None
                ]
                if marks:
                    known = {
                        (r.feed_id, r.key)
                        for r in conn.execute(
                            select(tombstones.c.feed_id, tombstones.c.key).where(
                                tombstones.c.key.in_([m["key"] for m in marks])
                            )
                        )
                    }
                    fresh = [m for m in marks if (m["feed_id"], m["key"]) not in known]
                    if fresh:
                        conn.execute(insert(tombstones), fresh)
                conn.execute(update(articles).where(articles.c.copy_of.in_(ids)).values(copy_of=None))
                conn.execute(delete(articles).where(articles.c.id.in_(ids)))  # signatures cascade
                removed_articles += len(ids)
                if on_progress is not None:
                    on_progress(len(ids))
            # Stories with no article left go, and so do the stories merged into them.
            has_article = exists().where(articles.c.story_id == stories.c.id)
            empty = conn.execute(
                select(stories.c.id).where(stories.c.merged_into.is_(None), ~has_article)
            ).scalars().all()
            for start in range(0, len(empty), _CHUNK):
                chunk = empty[start : start + _CHUNK]
                conn.execute(delete(stories).where(stories.c.merged_into.in_(chunk)))
                result = conn.execute(delete(stories).where(stories.c.id.in_(chunk)))
                removed_stories += result.rowcount or 0
            # The stories that kept some articles need their figures recomputed.
            touched = conn.execute(
                select(stories.c.id).where(
                    stories.c.merged_into.is_(None),
                    stories.c.article_count
                    != select(func.count()).where(articles.c.story_id == stories.c.id).scalar_subquery(),
                )
            ).scalars().all()
            self._refresh_stories(conn, touched, now)  # type: ignore[attr-defined]
            pruned = conn.execute(
                delete(tombstones).where(tombstones.c.removed_at < now - timedelta(days=tombstone_days))
            ).rowcount or 0
            if removed_articles:
                self._bump_generation(conn)  # type: ignore[attr-defined]
        return PurgeReport(removed_articles, removed_stories, pruned)

    def tombstoned_keys(self, conn: Connection, feed_id: int, keys: list[str]) -> set[str]:
        """Of ``keys``, those of the feed's articles removed by retention (never stored again).

        Most feeds have no tombstone at all: one indexed probe (the primary key's
        ``feed_id`` prefix) answers that before any lookup by key."""
        found: set[str] = set()
        if not keys or conn.execute(_HAS_TOMBSTONES, {"b_feed": feed_id}).first() is None:
            return found
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            found.update(conn.execute(_TOMBSTONED, {"b_feed": feed_id, "b_keys": chunk}).scalars())
        return found

    def maintain(self) -> str:
        """Database housekeeping where the engine wants it; returns what was done."""
        if self.is_sqlite:
            with self.engine.connect() as conn:
                raw = conn.connection.driver_connection  # autocommit: outside any transaction
                raw.execute("PRAGMA optimize")
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return "sqlite: PRAGMA optimize, WAL checkpoint"
        with self.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
        return "postgresql: ANALYZE (autovacuum does the rest)"

    # ------------------------------------------------------------------ figures

    def database_bytes(self) -> int | None:
        try:
            with self._tx() as conn:
                if self.is_sqlite:
                    pages = conn.exec_driver_sql("PRAGMA page_count").scalar()
                    size = conn.exec_driver_sql("PRAGMA page_size").scalar()
                    return int(pages) * int(size)
                return int(conn.execute(text("SELECT pg_database_size(current_database())")).scalar())
        except Exception:  # a figure for humans; never fail a status page for it
            return None

    def status(self, now: datetime, *, window_hours: float = 72.0) -> Status:
        day_ago = now - timedelta(hours=24)
        with self._tx() as conn:
            newest = aware_utc(
                conn.execute(select(func.max(articles.c.published)).where(articles.c.clustered.is_(True))).scalar()
            )
            count = lambda query: int(conn.execute(query).scalar_one())  # noqa: E731
            problems = conn.execute(
                select(feeds).where(feeds.c.error_count > 0).order_by(feeds.c.error_count.desc(), feeds.c.id)
            ).all()
            result = Status(
                feeds=count(select(func.count()).select_from(feeds)),
                feeds_due=count(
                    select(func.count()).select_from(feeds).where(feeds.c.next_check_at <= now, feeds.c.stopped.is_(None))
                ),
                feeds_in_error=tuple(
                    FeedProblem(r.id, r.url, r.title, r.error_count, r.last_error, r.next_check_at) for r in problems
                ),
                articles=count(select(func.count()).select_from(articles)),
                articles_24h=count(select(func.count()).select_from(articles).where(articles.c.fetched_at >= day_ago)),
                stories=count(
                    select(func.count()).select_from(stories).where(
                        stories.c.merged_into.is_(None), stories.c.article_count > 0
                    )
                ),
                stories_24h=count(
                    select(func.count()).select_from(stories).where(
                        stories.c.merged_into.is_(None), stories.c.created_at >= day_ago
                    )
                ),
                pending=count(select(func.count()).select_from(articles).where(articles.c.clustered.is_(False))),
                index_articles=0
                if newest is None
                else count(
                    select(func.count())
                    .select_from(articles)
                    .where(
                        articles.c.clustered.is_(True),
                        articles.c.published >= newest - timedelta(hours=window_hours),
                    )
                ),
                last_tick_at=None,
                last_tick_ok=None,
                database_bytes=None,
            )
        at, ok = self.last_tick()
        return replace(result, last_tick_at=at, last_tick_ok=ok, database_bytes=self.database_bytes())

    def metrics_snapshot(self) -> dict[str, Any]:
        with self._tx() as conn:
            sizes = dict(
                conn.execute(
                    select(stories.c.article_count, func.count())
                    .where(stories.c.merged_into.is_(None), stories.c.article_count > 0)
                    .group_by(stories.c.article_count)
                ).all()
            )
            figures = {
                "feeds": conn.execute(select(func.count()).select_from(feeds)).scalar_one(),
                "feeds_in_error": conn.execute(
                    select(func.count()).select_from(feeds).where(feeds.c.error_count > 0)
                ).scalar_one(),
                "articles": conn.execute(select(func.count()).select_from(articles)).scalar_one(),
                "stories": sum(sizes.values()),
                "story_sizes": {int(k): int(v) for k, v in sizes.items()},
            }
        figures["last_tick_at"] = self.last_tick()[0]
        return figures

