"""Coordination of several processes through the database: the part of the
storage facade that lets many ingest workers share one database.

* **Claiming due feeds** (:meth:`CoordinationMixin.claim_due_feeds`): one
  transaction selects the due feeds ``FOR UPDATE SKIP LOCKED`` (PostgreSQL;
  SQLite serialises writers with ``BEGIN IMMEDIATE`` and ignores the clause)
  and pushes their ``next_check_at`` forward by a *lease*, so two workers never
  fetch one feed at the same time, and the feeds of a worker that crashed
  become due again when the lease ends. The fetch's outcome then writes the
  real next check (:meth:`save_feed_state`); :meth:`release_feeds` gives back
  the feeds a stopping worker did not reach.
* **Serialising the clustering pass** (:meth:`lock_clustering`): a
  transaction-scoped advisory lock on PostgreSQL, taken first thing in the
  pass's transaction and released by its commit or rollback; a no-op on SQLite,
  whose ``BEGIN IMMEDIATE`` already serialises the writers.
* **What changed since a process last clustered** (:meth:`cluster_state`):
  the cluster *generation* (every pass that clustered, and every structural
  change), the cluster *epoch* (changes a process cannot follow incrementally:
  an operator's splits and merges, retention purges), the count of the
  clustering's own story *merges*, and the highest ``cluster_seq``. A process
  whose epoch is current only needs the articles clustered after the last
  ``cluster_seq`` it saw, plus, when merges happened, the survivors of the
  stories it holds (:meth:`survivors`): an incremental catch-up. Otherwise it
  rebuilds.

Mixed into :class:`aggregator.storage.Storage`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, text, update

from aggregator.models import Feed
from aggregator.storage.tables import ArticleRow, FeedRow, MetaRow, StoryRow

feeds = FeedRow.__table__
articles = ArticleRow.__table__
meta = MetaRow.__table__
stories = StoryRow.__table__

# pg_advisory_xact_lock key of the clustering pass: "aggregator cluster".
CLUSTER_LOCK_KEY = 0x61676772_636C7573 & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class ClusterState:
    generation: int  # every pass that clustered, and every structural change, increments it
    epoch: int  # changes that need a rebuild: an operator's splits and merges, purges
    merges: int  # the clustering's own story merges (followed incrementally)
    seq: int  # the highest cluster_seq recorded (0: nothing clustered yet)


class CoordinationMixin:
    """Feed claims, the clustering lock and the clustering counters (see the module docstring)."""

    engine: Any
    is_sqlite: bool
    _tx: Any
    _feed: Any

    # ------------------------------------------------------------------ feed claims

    def claim_due_feeds(self, now: datetime, limit: int, *, lease_seconds: float) -> list[Feed]:
        """The due feeds (soonest first, stopped ones never), claimed for this
        process: their ``next_check_at`` moves to ``now + lease`` in the same
        transaction, and rows another transaction is claiming are skipped.
        The records returned are as they were before the claim."""
        query = (
            select(feeds)
            .where(feeds.c.next_check_at <= now, feeds.c.stopped.is_(None))
            .order_by(feeds.c.next_check_at, feeds.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        with self._tx(write=True) as conn:
            rows = conn.execute(query).all()
            if rows:
                conn.execute(
                    update(feeds)
                    .where(feeds.c.id.in_([row.id for row in rows]))
                    .values(next_check_at=now + timedelta(seconds=lease_seconds))
                )
            return [self._feed(row) for row in rows]

    def release_feeds(self, claimed: list[Feed]) -> None:
        """Give back claimed feeds that were not fetched: they are due again as before."""
        if not claimed:
            return
        with self._tx(write=True) as conn:
            conn.execute(
                update(feeds).where(feeds.c.id == bindparam("b_id")).values(next_check_at=bindparam("b_next")),
                [{"b_id": feed.id, "b_next": feed.next_check_at} for feed in claimed],
            )

    # ------------------------------------------------------------------ clustering

    def lock_clustering(self) -> None:
        """Serialise clustering passes across processes until this transaction ends.

        Call inside ``batch()``: on PostgreSQL it takes ``pg_advisory_xact_lock``
        (released by the commit or rollback); on SQLite the write transaction
        (``BEGIN IMMEDIATE``) already excludes every other writer.
        """
        if self.is_sqlite:
            return
        with self._tx(write=True) as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLUSTER_LOCK_KEY})

    def cluster_state(self) -> ClusterState:
        with self._tx() as conn:
            values = dict(
                conn.execute(
                    select(meta.c.key, meta.c.value).where(
                        meta.c.key.in_(["cluster_generation", "cluster_epoch", "cluster_merges"])
                    )
                ).all()
            )
            seq = conn.execute(select(func.coalesce(func.max(articles.c.cluster_seq), 0))).scalar_one()
        return ClusterState(
            generation=int(values.get("cluster_generation") or 0),
            epoch=int(values.get("cluster_epoch") or 0),
            merges=int(values.get("cluster_merges") or 0),
            seq=int(seq),
        )

    def bump_cluster_merges(self) -> int:
        """Record that a clustering pass merged stories (others follow with :meth:`survivors`)."""
        with self._tx(write=True) as conn:
            return _bump(conn, "cluster_merges")

    def survivors(self, story_ids: list[int]) -> dict[int, int]:
        """Of these stories, those merged into another: story id -> the live story
        it now is (``merged_into`` always names the final survivor)."""
        found: dict[int, int] = {}
        with self._tx() as conn:
            for start in range(0, len(story_ids), 500):
                chunk = story_ids[start : start + 500]
                for row in conn.execute(
                    select(stories.c.id, stories.c.merged_into).where(
                        stories.c.id.in_(chunk), stories.c.merged_into.is_not(None)
                    )
                ):
                    found[row.id] = row.merged_into
        return found


def _bump(conn: Connection, key: str) -> int:
    found = conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
    value = int(found or 0) + 1
    if found is None:
        conn.execute(insert(meta).values(key=key, value=str(value)))
    else:
        conn.execute(update(meta).where(meta.c.key == key).values(value=str(value)))
    return value
