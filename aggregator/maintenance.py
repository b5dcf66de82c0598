"""Retention clean-up and database maintenance, one job.

Removes articles published more than ``retention_days`` ago (with their
signatures, and tombstones so that their feeds cannot bring them back),
stories left empty, then runs the engine's housekeeping. The daemon runs it
every ``cleanup_hours``; ``aggregator cleanup`` runs it by hand. Clustering
processes notice the removal through the cluster generation and rebuild their
index from what is left.
"""

from __future__ import annotations

import io
import logging
import time
from datetime import datetime, timedelta
from typing import TextIO

from aggregator.config import Settings
from aggregator.logs import event
from aggregator.progress import Progress
from aggregator.storage import Storage
from aggregator.storage.operations import PurgeReport

log = logging.getLogger(__name__)


def cleanup(
    storage: Storage, settings: Settings, *, now: datetime, progress: TextIO | None = None
) -> PurgeReport | None:
    """Apply retention (None when it is off), then maintenance. ``progress``:
    where to draw a progress bar (only drawn on a terminal)."""
    started = time.perf_counter()
    report = None
    if settings.retention_days > 0:
        cutoff = now - timedelta(days=settings.retention_days)
        total = storage.count_before(cutoff) if progress is not None else 0
        with Progress(total, "removing old articles", progress or io.StringIO()) as bar:
            report = storage.purge_before(
                cutoff, now=now, tombstone_days=2 * settings.retention_days, on_progress=bar.advance
            )
    done = storage.maintain()
    event(
        log,
        "cleanup",
        articles=report.articles if report else 0,
        stories=report.stories if report else 0,
        tombstones_pruned=report.tombstones_pruned if report else 0,
        maintenance=done,
        seconds=time.perf_counter() - started,
    )
    return report
