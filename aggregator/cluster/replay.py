"""Replay labelled JSONL files through the clusterer, in memory, and measure the result.

A record is one JSON object per line: ``id``, ``title``, ``text``, ``published`` (ISO 8601
or null), optionally ``source``, ``url`` and the gold label ``cluster`` (see
``/work/shared/eval/README.md``). Records are replayed in order of ``published``, file
order where it is null; undated records are "at the same moment" as the stream's clock.

The app's ``aggregator evaluate`` runs the same :class:`Clusterer` through a throwaway
database; this module is the storage-free twin used by the benchmark and the tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .clusterer import Clusterer
from .settings import ClusterSettings, Document


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Every record of a JSONL file, in file order (blank lines skipped)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 string (``Z`` allowed) as an aware UTC datetime; None stays None."""
    if value is None or value == "":
        return None
    text = value if isinstance(value, datetime) else str(value).replace("Z", "+00:00")
    dt = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def replay_order(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """Indexes of ``records`` in replay order.

    Dated records are sorted by ``published`` (stable, so ties keep file order); an
    undated record keeps its place relative to the dated record before it in the file
    (it happens "now", when it arrives). With all records undated this is file order.
    """
    times = [parse_time(r.get("published")) for r in records]
    keyed: list[tuple[float, int, int]] = []
    last = float("-inf")
    for i, t in enumerate(times):
        if t is not None:
            last = t.timestamp()
            keyed.append((last, 0, i))
        else:
            keyed.append((last, 1, i))
    keyed.sort()
    return [i for _, _, i in keyed]


def to_document(record: Mapping[str, Any], numeric_id: int) -> Document:
    return Document(
        id=numeric_id,
        title=str(record.get("title") or ""),
        text=str(record.get("text") or ""),
        published=parse_time(record.get("published")),
        source=record.get("source"),
        url=record.get("url"),
    )


@dataclass
class ReplayStats:
    n: int = 0
    stories: int = 0
    seconds: float = 0.0
    signals: dict[str, int] = field(default_factory=dict)
    merges: int = 0
    copies: dict[str, str] = field(default_factory=dict)  # record id -> record id it copies
    candidate_total: int = 0  # articles whose gold story already existed (in the window)
    candidate_found: int = 0  # ... and was among the LSH candidates

    @property
    def per_second(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")

    @property
    def candidate_recall(self) -> float:
        return self.candidate_found / self.candidate_total if self.candidate_total else 1.0


def replay(
    records: Sequence[Mapping[str, Any]],
    settings: ClusterSettings | None = None,
    *,
    measure_candidates: bool = False,
) -> tuple[dict[str, int], ReplayStats]:
    """Cluster ``records`` in replay order; returns ({record id: story id}, stats).

    With ``measure_candidates`` (needs gold labels), also counts for each article whose
    gold story already holds an article in the index whether any of those articles is
    among its LSH candidates (time spent on this is not counted in ``seconds``).
    """
    clusterer = Clusterer(settings or ClusterSettings())
    order = replay_order(records)
    ids = [str(r["id"]) for r in records]
    by_numeric: dict[int, str] = {}
    story_of: dict[int, int] = {}  # article -> story, merges applied lazily via `parent`
    parent: dict[int, int] = {}
    stats = ReplayStats()
    next_story = [0]

    def new_story() -> int:
        next_story[0] += 1
        return next_story[0]

    def find(sid: int) -> int:
        root = sid
        while parent.get(root, root) != root:
            root = parent[root]
        while parent.get(sid, sid) != root:
            parent[sid], sid = root, parent[sid]
        return root

    gold_members: dict[Any, list[int]] = {}
    elapsed = 0.0
    for pos, i in enumerate(order):
        record = records[i]
        numeric = pos + 1
        by_numeric[numeric] = ids[i]
        doc = to_document(record, numeric)
        if measure_candidates and "cluster" in record:
            held = [a for a in gold_members.get(record["cluster"], ()) if a in clusterer._articles]
            if held:
                stats.candidate_total += 1
                hits = set(clusterer._index.query(clusterer.prepare(doc).sketch))
                if hits.intersection(held):
                    stats.candidate_found += 1
            gold_members.setdefault(record["cluster"], []).append(numeric)
        t0 = time.process_time()
        decision, sid = clusterer.assign(doc, new_story)
        elapsed += time.process_time() - t0
        for other in decision.merge:
            parent[find(other)] = find(sid)
            stats.merges += 1
        story_of[numeric] = sid
        stats.signals[decision.signal] = stats.signals.get(decision.signal, 0) + 1
        if decision.copy_of is not None:
            stats.copies[ids[i]] = by_numeric[decision.copy_of]
    predictions = {by_numeric[a]: find(s) for a, s in story_of.items()}
    stats.n = len(predictions)
    stats.stories = len(set(predictions.values()))
    stats.seconds = elapsed
    return predictions, stats


def gold_labels(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {str(r["id"]): r["cluster"] for r in records if "cluster" in r}
