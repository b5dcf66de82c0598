"""Clustering quality and speed on the labelled dev files and the seed reports.

    .venv/bin/python benchmarks/cluster_quality.py            # full files (~30 s)
    .venv/bin/python benchmarks/cluster_quality.py --fast     # subsample, < 20 s, for CI
    .venv/bin/python benchmarks/cluster_quality.py --set join_scale=0.025 --set merge_scale=0.06
    .venv/bin/python benchmarks/cluster_quality.py --halves 8   # + spread over story halves (~3 min)

For each file it prints n, stories formed, B-cubed P/R/F1, pairwise F1, ARI, LSH candidate
recall (share of articles whose gold story already had an article in the index and was
among the LSH hits) and articles per second of the clusterer alone (prepare + decide +
add, in memory; candidate-recall bookkeeping not timed). Files that are absent are
skipped with a message. The data live in ``<repo>/../shared`` (override with --data).

``--halves N`` also scores each file's stories split in two halves by a salted hash (blake2b)
of the gold label, N salts: the way the held-out halves were cut (README of ../shared/eval). The
spread of B-cubed F1 over those 2N halves says how much a figure on an unseen half of the
stories may differ from the dev figure (a half is less crowded than the whole file, so its
mean runs a little high; the low end is what to watch).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aggregator.cluster import ClusterSettings  # noqa: E402
from aggregator.cluster.metrics import adjusted_rand, bcubed, pairwise  # noqa: E402
from aggregator.cluster.replay import gold_labels, load_jsonl, replay  # noqa: E402

FILES = ("ecbplus_dev.jsonl", "gnews_dev.jsonl", "uci_dev.jsonl")
TARGETS = {"ecbplus_dev.jsonl": 0.90, "gnews_dev.jsonl": 0.93, "uci_dev.jsonl": 0.88}
SEED_DATES = {
    "000": "2022-03-30",
    "002": "2022-03-28",
    "004": "2022-03-21",
    "001": "2025-06-03",
    "003": "2025-06-03",
}


def seed_records(folder: Path) -> list[dict[str, object]]:
    """The seed reports as records: first line the title, the rest the body; 001 and 003 are one story."""
    records: list[dict[str, object]] = []
    for path in sorted(folder.glob("*.txt")):
        key = path.name[:3]
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        date = SEED_DATES.get(key)
        records.append(
            {
                "id": key,
                "title": title.strip(),
                "text": body,
                "published": f"{date}T00:00:00Z" if date else None,
                "cluster": "june-2025" if key in {"001", "003"} else key,
            }
        )
    return records


def subsample(records: list[dict[str, object]], keep: float) -> list[dict[str, object]]:
    """Whole gold stories, chosen by a hash of the label (so stories stay complete)."""
    if keep >= 1.0:
        return records
    limit = int(keep * 1000)
    return [r for r in records if zlib.crc32(str(r["cluster"]).encode()) % 1000 < limit]


def halves(records: list[dict[str, object]], salt: int) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """The records split in two by a salted hash of the gold label (stories stay whole)."""
    parts: tuple[list[dict[str, object]], list[dict[str, object]]] = ([], [])
    for r in records:
        # not crc32: it is affine, so every salt would give one of few splits (all of them
        # the same one where the labels have one length, as on UCI)
        parts[hashlib.blake2b(f"{salt}:{r['cluster']}".encode(), digest_size=8).digest()[0] & 1].append(r)
    return parts


def spread(name: str, records: list[dict[str, object]], settings: ClusterSettings, n: int) -> str:
    """B-cubed F1 over 2n story halves: min, mean, max, and how many fall below the target."""
    scores = []
    for salt in range(n):
        for half in halves(records, salt):
            if half:
                pred, _ = replay(half, settings)
                scores.append(bcubed(pred, gold_labels(half))[2])
    target = TARGETS.get(name)
    below = "" if target is None else f"  below {target:.2f}: {sum(f < target for f in scores)}/{len(scores)}"
    return (
        f"{name:18s} halves {len(scores):3d}  F1 min {min(scores):.3f} mean {sum(scores) / len(scores):.3f}"
        f" max {max(scores):.3f}{below}"
    )


def row(name: str, records: list[dict[str, object]], settings: ClusterSettings) -> str:
    pred, stats = replay(records, settings, measure_candidates=True)
    gold = gold_labels(records)
    p, r, f1 = bcubed(pred, gold)
    pf1 = pairwise(pred, gold)[2]
    ari = adjusted_rand(pred, gold)
    target = TARGETS.get(name)
    verdict = "" if target is None else ("  ok" if f1 >= target else f"  below {target:.2f}")
    return (
        f"{name:18s} {stats.n:6d} {stats.stories:7d}  {p:.3f} {r:.3f} {f1:.3f}  {pf1:.3f} {ari:.3f}"
        f"  {stats.candidate_recall:.3f}  {stats.per_second:8.0f}{verdict}"
    )


def parse_value(text: str) -> object:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="subsample the large files (CI mode)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--halves", type=int, default=0, metavar="N", help="also score 2N story halves per file")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="override a setting")
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = parse_value(value)
    settings = ClusterSettings().replace(**overrides)
    if overrides:
        print("settings:", overrides)
    print(
        f"{'file':18s} {'n':>6s} {'stories':>7s}  {'P':5s} {'R':5s} {'F1':5s}  {'pwF1':5s} {'ARI':5s}  {'cand':5s}  {'art/s':>8s}"
    )
    for name in FILES:
        path = args.data / "eval" / name
        if not path.exists():
            print(f"{name:18s} skipped: {path} not found")
            continue
        records = load_jsonl(path)
        if args.fast and len(records) > 1500:
            records = subsample(records, 1500 / len(records))
        print(row(name, records, settings), flush=True)
        if args.halves:
            print(spread(name, records, settings, args.halves), flush=True)
    seeds = args.data / "seeds"
    if not seeds.is_dir() or not any(seeds.glob("*.txt")):
        print(f"{'seeds':18s} skipped: {seeds} not found")
        return 0
    records = seed_records(seeds)
    print(row("seeds", records, settings))
    pred, _ = replay(records, settings)
    together = pred.get("001") is not None and pred.get("001") == pred.get("003")
    others = {pred[k] for k in ("000", "002", "004") if k in pred}
    apart = pred.get("001") not in others and len(others) == 3
    print(
        f"{'seeds check':18s} 001+003 together: {together}; 000, 002, 004 each alone: {apart}"
        f"  {'ok' if together and apart else 'FAILED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
