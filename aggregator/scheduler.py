"""The daemon's jobs (APScheduler 3.x lives here and nowhere else).

One job, the *tick*, runs every ``tick_seconds``: it asks storage which feeds
are due (``next_check_at``), updates them and clusters what arrived. The
scheduler keeps no per-feed state of its own, so a restart, or a second
process, needs nothing but the database. A tick never overlaps itself
(``max_instances=1``); missed ticks are coalesced into one. A tick that fails
because the database is unavailable (locked, unreachable, read-only, full)
is logged (``tick outcome=error``) and the next tick simply tries again.
On shutdown the tick in flight stops starting fetches and finishes what it
has (see ``Daemon.shutdown``).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from aggregator import fetch as fetch_module
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, Fetcher, PassReport, run_pass
from aggregator.storage import Storage, StorageError

log = logging.getLogger(__name__)


class Daemon:
    """Runs ingest ticks in the background until shut down."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        engine: ClusterEngine,
        *,
        fetcher: Fetcher = fetch_module.fetch,
    ):
        self.settings = settings
        self.storage = storage
        self.engine = engine
        self.fetcher = fetcher
        self.last_tick_at: datetime | None = None
        self.last_tick_ok: bool | None = None
        self.ticks = 0
        self._tick_lock = threading.Lock()
        self._stopping = threading.Event()
        self._scheduler = BackgroundScheduler(timezone=timezone.utc)
        self._scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=settings.tick_seconds),
            id="tick",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
            next_run_time=datetime.now(timezone.utc),
        )

    def tick(self) -> PassReport | None:
        """One pass over the due feeds. Errors of the service itself (database
        unavailable) are logged and retried at the next tick."""
        with self._tick_lock:
            started = time.perf_counter()
            try:
                report = run_pass(
                    self.storage, self.engine, self.settings, fetcher=self.fetcher, stop=self._stopping
                )
            except StorageError as exc:
                self.last_tick_ok = False
                log.error("tick outcome=error error=%r", str(exc))
                return None
            except Exception:
                self.last_tick_ok = False
                log.exception("tick outcome=error (unexpected)")
                return None
            self.ticks += 1
            self.last_tick_ok = True
            self.last_tick_at = datetime.now(timezone.utc)
            log.info(
                "tick outcome=ok feeds=%d errors=%d new_articles=%d clustered=%d seconds=%.3f",
                len(report.feeds),
                sum(1 for r in report.feeds if r.status == "error"),
                sum(r.new for r in report.feeds),
                report.cluster.clustered,
                time.perf_counter() - started,
            )
            return report

    @property
    def running(self) -> bool:
        return bool(self._scheduler.running)

    def start(self) -> None:
        self._scheduler.start()
        log.info("scheduler started tick_seconds=%d", self.settings.tick_seconds)

    def shutdown(self, wait: bool = True) -> None:
        """Stop scheduling; with ``wait`` the tick in flight finishes first.

        The tick in flight starts no further fetch: the fetches under way
        finish (each within ``fetch_timeout``), what they brought is stored and
        clustered, and the feeds not reached stay due for the next start.
        """
        self._stopping.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
            log.info("scheduler stopped")
