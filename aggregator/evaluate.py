"""Replay a labelled JSONL file through the real pipeline and score the stories.

The records (format: ``../shared/eval/README.md``) are stored in a throwaway
SQLite database as articles, in replay order (``published``; file order where
it is null, an undated record being "at the same moment" as the one before
it), then clustered by :func:`aggregator.ingest.cluster_pending`: the same
normalise, sign, index and assign code that the daemon runs. The stories it
forms are compared with the gold labels.
"""

from __future__ import annotations

import hashlib
import io
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from aggregator.cluster import ClusterSettings
from aggregator.cluster.metrics import adjusted_rand, bcubed, pairwise
from aggregator.cluster.replay import load_jsonl, parse_time, replay_order
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, cluster_pending
from aggregator.models import ParsedEntry
from aggregator.progress import Progress
from aggregator.storage import Storage
from aggregator.text import canonical_url

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
CHUNK = 1000


def _entries(records: Sequence[Mapping[str, Any]]) -> tuple[list[ParsedEntry], list[str | None]]:
    entries: list[ParsedEntry] = []
    sources: list[str | None] = []
    clock = EPOCH
    for index in replay_order(records):
        record = records[index]
        published = parse_time(record.get("published"))
        if published is not None:
            clock = published
        title = str(record.get("title") or "")
        text = str(record.get("text") or "")
        url = record.get("url")
        entries.append(
            ParsedEntry(
                key=str(record["id"]),
                title=title,
                link=canonical_url(url) if url else None,
                summary=text[:500],
                content_html="",
                text=text,
                author=None,
                published=published or clock,
                updated=published or clock,
                content_hash=hashlib.sha256(f"{title}\n{text}".encode()).hexdigest(),
                dated=published is not None,
            )
        )
        sources.append(record.get("source"))
    return entries, sources


def evaluate_records(
    records: Sequence[Mapping[str, Any]],
    settings: Settings,
    *,
    cluster_settings: ClusterSettings | None = None,
    progress: TextIO | None = None,
) -> tuple[dict[str, Any], dict[str, int]]:
    """Score the clustering of ``records``; returns (figures, {record id: story id})."""
    ids = [str(r["id"]) for r in records]
    if len(set(ids)) != len(ids):
        raise ValueError("record ids are not unique")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aggregator-evaluate-") as tmp:
        storage = Storage(f"sqlite:///{Path(tmp) / 'evaluate.db'}")
        try:
            storage.upgrade()
            # once per process, like the daemon's start (loads the embedding table): not per article
            engine = ClusterEngine(cluster_settings or ClusterSettings.from_settings(settings))
            prepared_at = time.perf_counter()
            entries, sources = _entries(records)
            now = datetime.now(timezone.utc)
            merges = 0
            # In replay order, a slice at a time: the same order as all at once
            # (pending articles are clustered by published time, then id), with
            # progress to show on a terminal.
            with Progress(len(entries), "evaluating", progress or io.StringIO()) as bar:
                for start in range(0, len(entries), CHUNK):
                    with storage.batch():
                        storage.save_entries(
                            None,
                            entries[start : start + CHUNK],
                            source=None,
                            sources=sources[start : start + CHUNK],
                            fetched_at=now,
                        )
                    merges += cluster_pending(storage, engine).merges
                    bar.advance(len(entries[start : start + CHUNK]))
            # every article of a live story (those of iter_stories), read in one query
            predictions = {key: story_id for _feed, key, story_id in storage.story_assignments()}
            seconds = time.perf_counter() - prepared_at
        finally:
            storage.close()
    total = time.perf_counter() - started
    figures: dict[str, Any] = {"n": len(predictions), "stories": len(set(predictions.values()))}
    gold = {str(r["id"]): r["cluster"] for r in records if "cluster" in r}
    if gold:
        scored = {key: value for key, value in predictions.items() if key in gold}
        p, r, f1 = bcubed(scored, gold)
        figures.update(
            bcubed_p=round(p, 4),
            bcubed_r=round(r, 4),
            bcubed_f1=round(f1, 4),
            pairwise_f1=round(pairwise(scored, gold)[2], 4),
            ari=round(adjusted_rand(scored, gold), 4),
        )
    figures.update(
        seconds=round(seconds, 3),
        articles_per_second=round(len(predictions) / seconds, 1) if seconds > 0 else None,
        merges=merges,
        total_seconds=round(total, 3),
    )
    return figures, predictions


def evaluate_file(
    path: Path, settings: Settings, *, predictions: Path | None = None, progress: TextIO | None = None
) -> dict[str, Any]:
    """``progress``: where to draw a progress bar (only drawn on a terminal)."""
    records = load_jsonl(path)
    figures, assigned = evaluate_records(records, settings, progress=progress)
    if predictions is not None:
        with open(predictions, "w", encoding="utf-8") as fh:
            for record in records:
                key = str(record["id"])
                fh.write(f"{key}\t{assigned[key]}\n")
    return figures
