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
* **The clustering leader** (:meth:`leader_lock`, :class:`LeaderLock`): a
  session-level advisory lock (``pg_try_advisory_lock``, its own key) held on a
  dedicated connection for as long as the process lives. The daemon's worker
  that holds it is the one that runs clustering passes; the others only fetch
  and store. PostgreSQL releases it when the holder's session ends (the process
  exits or dies, its connection drops), and the next worker that tries takes
  it. It is an optimisation only: passes are still serialised by
  :meth:`lock_clustering` and still catch up, so two leaders at once (during a
  failover) are merely slower. On SQLite (one process) the lock is always held.

Mixed into :class:`aggregator.storage.Storage`.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, create_engine, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from aggregator.models import Feed
from aggregator.storage.tables import ArticleRow, FeedRow, MetaRow, StoryRow

feeds = FeedRow.__table__
articles = ArticleRow.__table__
meta = MetaRow.__table__
stories = StoryRow.__table__

# pg_advisory_xact_lock key of the clustering pass: "aggregator cluster".
CLUSTER_LOCK_KEY = 0x61676772_636C7573 & 0x7FFFFFFFFFFFFFFF
# pg_try_advisory_lock key (session level) of the clustering leader: "aggregator leader".
LEADER_LOCK_KEY = 0x61676772_6C656164 & 0x7FFFFFFFFFFFFFFF

# The leader's connection asks the server to notice a vanished client within about a
# minute and a half (TCP keepalives on both sides), so that its lock is freed for
# another worker even when the leader's machine or network disappears without
# closing the socket. A process that dies on a live machine closes it at once.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 6}
_SERVER_KEEPALIVES = ("SET tcp_keepalives_idle = 30", "SET tcp_keepalives_interval = 10",
                      "SET tcp_keepalives_count = 6")


class LeaderLock:
    """The clustering leader's lock (see the module docstring): a session-level
    advisory lock on a connection of its own (outside the pool, in autocommit, so
    that it never sits idle in a transaction), kept open for the process lifetime.

    :meth:`try_acquire` is called at every tick: it takes the lock when it is free,
    and for a holder checks that its connection (hence the lock) is still alive.
    Database errors are not raised: a process that cannot reach the database is
    simply not the leader (its tick fails on its own account). Thread-safe.
    """

    def __init__(self, url: str | None):
        self._url = url  # None: SQLite, one process, always the leader
        self._engine: Any = None
        self._conn: Connection | None = None
        self._held = url is None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """Hold the lock if it is free; True while this process holds it."""
        if self._url is None:
            return True
        with self._lock:
            if self._held and self._alive():
                return True
            self._held = False
            try:
                conn = self._connection()
                self._held = bool(
                    conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": LEADER_LOCK_KEY}).scalar()
                )
            except DBAPIError:
                self._drop()
            return self._held

    def release(self) -> None:
        """Give the lock up and close the connection (another worker takes over at its next tick)."""
        with self._lock:
            if self._url is None:
                return
            if self._held and self._conn is not None:
                with contextlib.suppress(DBAPIError):
                    self._conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LEADER_LOCK_KEY})
            self._held = False
            self._drop()
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None

    def _alive(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except DBAPIError:  # the session ended: PostgreSQL released the lock with it
            self._drop()
            return False

    def _connection(self) -> Connection:
        if self._conn is None:
            if self._engine is None:
                self._engine = create_engine(self._url, poolclass=NullPool, connect_args=_KEEPALIVES)
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            for statement in _SERVER_KEEPALIVES:
                with contextlib.suppress(DBAPIError):
                    conn.execute(text(statement))
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.invalidate()
                self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class ClusterState:
    generation: int  # every pass that clustered, and every structural change, increments it
    epoch: int  # changes that need a rebuild: an operator's splits and merges, purges
    merges: int  # the clustering's own story merges (followed incrementally)
    seq: int  # the highest cluster_seq recorded (0: nothing clustered yet)


class CoordinationMixin:
    """Feed claims, the clustering lock and the clustering counters (see the module docstring)."""

    engine: Any
    url: str
    is_sqlite: bool
    _leader_locks: weakref.WeakSet[LeaderLock]  # made by leader_lock(), released by close()
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

    def leader_lock(self) -> LeaderLock:
        """A new, not yet taken, clustering-leader lock of this database (see
        :class:`LeaderLock`); :meth:`close` of the storage releases it."""
        lock = LeaderLock(None if self.is_sqlite else self.url)
        self._leader_locks.add(lock)
        return lock

    def _release_leader_locks(self) -> None:
        for lock in list(self._leader_locks):
            lock.release()

    def clustering_leaders(self) -> int | None:
        """How many sessions hold the clustering leader's lock now (0 or 1; None on
        SQLite, where the one process that clusters is always the leader)."""
        if self.is_sqlite:
            return None
        with self._tx() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                        " AND classid = :high AND objid = :low AND objsubid = 1"
                    ),
                    {"high": LEADER_LOCK_KEY >> 32, "low": LEADER_LOCK_KEY & 0xFFFFFFFF},
                ).scalar_one()
            )

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
