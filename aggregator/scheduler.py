"""The daemon's jobs (APScheduler 3.x lives here and nowhere else).

One job, the *tick*, runs every ``tick_seconds``: it asks storage which feeds
are due (``next_check_at``), updates them and clusters what arrived. The
scheduler keeps no per-feed state of its own, so a restart, or a second
process, needs nothing but the database. Only the *clustering leader* (one
worker at a time, see ``aggregator.ingest.Leadership``) clusters at the end of
its ticks; the other workers' ticks fetch and store. A tick never overlaps itself
(``max_instances=1``); missed ticks are coalesced into one. A tick that fails
because the database is unavailable (locked, unreachable, read-only, full)
is logged (``tick outcome=error``) and the next tick simply tries again.
On shutdown the tick in flight stops starting fetches and finishes what it
has (see ``Daemon.shutdown``).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from aggregator import fetch as fetch_module
from aggregator import maintenance, metrics
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, Fetcher, Leadership, PassReport, run_pass
from aggregator.logs import event
from aggregator.storage import Storage, StorageError

log = logging.getLogger(__name__)


class Daemon:
    """Runs ingest ticks (and the daily clean-up) in the background until shut down."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        engine: ClusterEngine,
        *,
        fetcher: Fetcher = fetch_module.fetch,
        on_stories_changed: Callable[[set[int]], None] | None = None,
        leadership: Leadership | None = None,
    ):
        self.settings = settings
        # Who clusters among the workers: taken (when free) and checked at every tick,
        # given up on shutdown. SQLite: always this process.
        self.leadership = leadership if leadership is not None else Leadership(storage)
        self.storage = storage
        self.engine = engine
        self.fetcher = fetcher
        self.on_stories_changed = on_stories_changed  # the WebSub hub's hook
        self.last_tick_at: datetime | None = None
        self.last_tick_ok: bool | None = None
        self.ticks = 0
        self._tick_lock = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=settings.tick_seconds),
            id="tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC),
        )
        self._scheduler.add_job(
            self.cleanup,
            IntervalTrigger(hours=settings.cleanup_hours),
            id="cleanup",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(UTC) + timedelta(minutes=5),
        )

    def tick(self) -> PassReport | None:
        """One pass over the due feeds. Errors of the service itself (database
        unavailable) are logged and retried at the next tick."""
        with self._tick_lock:
            started = time.perf_counter()
            try:
                report = run_pass(
                    self.storage, self.engine, self.settings, fetcher=self.fetcher, stop=self._stopping,
                    leadership=self.leadership,
                )
            except Exception as exc:
                self.last_tick_ok = False
                metrics.TICKS.labels(outcome="error").inc()
                if isinstance(exc, StorageError):
                    event(log, "tick", logging.ERROR, outcome="error", error=str(exc))
                else:
                    log.exception("tick outcome=error (unexpected)")
                with contextlib.suppress(StorageError):
                    self.storage.record_tick(datetime.now(UTC), ok=False)
                return None
            seconds = time.perf_counter() - started
            self.ticks += 1
            self.last_tick_ok = True
            self.last_tick_at = datetime.now(UTC)
            metrics.TICKS.labels(outcome="ok").inc()
            metrics.TICK_SECONDS.observe(seconds)
            with contextlib.suppress(StorageError):  # the heartbeat of /readyz and `status`
                self.storage.record_tick(self.last_tick_at, ok=True)
            if self.on_stories_changed is not None and report.cluster.story_ids:
                self.on_stories_changed(report.cluster.story_ids)
            event(
                log,
                "tick",
                outcome="ok",
                feeds=len(report.feeds),
                errors=sum(1 for r in report.feeds if r.status == "error"),
                new_articles=sum(r.new for r in report.feeds),
                clustered=report.cluster.clustered,
                leader=not report.cluster.skipped,
                seconds=seconds,
            )
            return report

    def cleanup(self) -> None:
        """Retention and database maintenance (see :mod:`aggregator.maintenance`)."""
        with self._tick_lock:  # never beside a tick: the clean-up changes what the index holds
            try:
                maintenance.cleanup(self.storage, self.settings, now=datetime.now(UTC))
            except StorageError as exc:
                event(log, "cleanup", logging.ERROR, outcome="error", error=str(exc))

    def reconfigure(self, settings: Settings) -> None:
        """Apply reloaded settings (SIGHUP) without stopping: the next tick uses
        them, and the jobs are rescheduled when their periods changed. The tick
        in flight finishes with the settings it started with."""
        old, self.settings = self.settings, settings
        if settings.tick_seconds != old.tick_seconds:
            self._scheduler.reschedule_job("tick", trigger=IntervalTrigger(seconds=settings.tick_seconds))
        if settings.cleanup_hours != old.cleanup_hours:
            self._scheduler.reschedule_job("cleanup", trigger=IntervalTrigger(hours=settings.cleanup_hours))
        event(log, "reconfigured", tick_seconds=settings.tick_seconds, cleanup_hours=settings.cleanup_hours)

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()
        event(log, "scheduler", state="started", tick_seconds=self.settings.tick_seconds)

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait`` the tick in flight finishes first.

        The tick in flight starts no further fetch: the fetches under way
        finish (each within ``fetch_timeout``), what they brought is stored and
        clustered, and the feeds not reached stay due for the next start.
        """
        self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
            event(log, "scheduler", state="stopped")
        self.leadership.release()  # another worker leads from its next tick
