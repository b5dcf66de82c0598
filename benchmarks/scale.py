"""The clustering index at scale: RAM per article, per-article cost, and restart time.

A synthetic stream (``benchmarks/synthetic.py``, ``--length headline`` by default: a
title and a one-sentence summary, what most RSS entries carry; ``mixed`` adds 30 %
600-word bodies) arrives at a fixed rate, ``--rate`` articles per hour (default 1,488/h:
one million articles over four weeks). Articles older than the 72-hour clustering window
leave the index, so it holds at most ``rate * 72`` articles (107,143 at the default
rate): memory and cost are bounded by the window, not by the stream.

``--mode index`` (default; 1M in 10-20 minutes): the candidate index alone, the
product's ``CandidateIndex`` (the compact in-process index of ``cluster/sketch.py``) or,
with ``--index datasketch``, datasketch's in-memory ``MinHashLSH`` it replaced. Every
article is prepared (features + MinHash, as in production), inserted, removed when it
leaves the window; one in ``--query-every`` (10) is also queried; every article and its
signature is written to a SQLite database of the product's schema. Restart: the window's
signatures read in one query on the product's tables, then the index built from them in
bulk (``CandidateIndex.insert_many``: one sort of every band key; datasketch: one insert
per article).

``--mode clusterer`` (slow: ms per article once the window is full): the whole
``Clusterer`` (prepare + decide + add), every article also written to a SQLite database as
the daemon stores it, and the daemon's restart path (``ClusterEngine.rebuild``) timed.

``--mode restart`` (1M in ~10 minutes, most of it storing): what a restart of the whole
engine costs at any size, without deciding every article first: the stream is stored as
the daemon stores it (articles, signatures, each article in its gold story), and at each
checkpoint a fresh ``ClusterEngine`` is rebuilt from the database and timed: two windows
read, the older window's finished stories replayed for their IDF counts only
(``transient``), features and embeddings recomputed with ``--rebuild-workers`` helper
processes (the daemon's ``rebuild_workers``, default 1), the index built in bulk.

At each checkpoint (``--sizes``, default 100k, 300k and 1M) it prints the articles in the
stream and resident in the window, the RSS growth of the process per stream article and
per resident article (target: <= 2 KB per article at 1M), the bytes the index itself
holds per resident article (its containers; and, traced with ``tracemalloc``, those of
the index built at the restart), CPU microseconds per query, insert and removal (target:
at 1M within 1.5x of 100k) and the restart time, database read + index build (target:
<= 20 s at 1M).

    python benchmarks/scale.py                     # index mode, 100k / 300k / 1M
    python benchmarks/scale.py --index datasketch  # the same with datasketch's MinHashLSH
    python benchmarks/scale.py --fast              # CI: index mode at 5k and 15k, under a minute
    python benchmarks/scale.py --sizes 100000,1000000 --recycle 120000   # 1M at ~1/4 of the time
    python benchmarks/scale.py --mode clusterer --sizes 20000,100000   # the whole clusterer
    python benchmarks/scale.py --mode restart --sizes 100000,1000000   # a whole-engine restart
    python benchmarks/scale.py --mode restart --fast   # CI: 10k and 30k stored, ~20 s
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402

from aggregator import ingest  # noqa: E402
from aggregator.cluster import Clusterer, ClusterSettings, Document  # noqa: E402
from aggregator.config import Settings  # noqa: E402
from aggregator.storage import open_storage  # noqa: E402
from aggregator.storage.facade import articles, index_for_search, signatures, stories  # noqa: E402

REBUILD_WORKERS = Settings().rebuild_workers  # the daemon's default
MAX_BYTES_PER_ARTICLE = 2048
MAX_COST_GROWTH = 1.5
MAX_RESTART_S = 20.0
NOW = datetime(2024, 6, 1, tzinfo=UTC)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


class Timed:
    """Wraps the clusterer's CandidateIndex to time query and insert (and remove)."""

    def __init__(self, index: object) -> None:
        self._index = index
        self.seconds = {"query": 0.0, "insert": 0.0, "remove": 0.0}
        self.calls = {"query": 0, "insert": 0, "remove": 0}
        self.bands = index.bands  # type: ignore[attr-defined]

    def _timed(self, name: str, method: str, *args: object) -> object:
        started = time.process_time()  # CPU time: a paused or preempted process is not charged
        result = getattr(self._index, method)(*args)
        self.seconds[name] += time.process_time() - started
        self.calls[name] += 1
        return result

    def query(self, sketch: object) -> object:
        return self._timed("query", "query", sketch)

    def query_counts(self, sketch: object) -> object:
        return self._timed("query", "query_counts", sketch)

    def query_labels(self, sketch: object, min_bands: int) -> object:
        return self._timed("query", "query_labels", sketch, min_bands)

    def insert(self, key: object, sketch: object, label: int = 0) -> None:
        self._timed("insert", "insert", key, sketch, label)

    def remove(self, key: object) -> None:
        self._timed("remove", "remove", key)

    def __getattr__(self, name: str) -> object:  # the rest of the index (relabel, shared, ...): untimed
        return getattr(self._index, name)

    def __contains__(self, key: object) -> bool:
        return key in self._index  # type: ignore[operator]

    def reset(self) -> None:
        for name in self.seconds:
            self.seconds[name] = 0.0
            self.calls[name] = 0


def breakdown(clusterer: Clusterer, sample: int = 2000) -> dict[str, float]:
    """Bytes per resident article of each part of the state, measured with tracemalloc
    by rebuilding ``sample`` resident articles' parts (vectors, term sets, sketches,
    LSH entries) from copies."""
    import tracemalloc

    held = list(clusterer._articles.values())[-sample:]
    if not held:
        return {}
    n = len(held)
    out: dict[str, float] = {}
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    vecs = [{k: v + 0.0 for k, v in a.vec.items()} for a in held]
    out["vector"] = (tracemalloc.get_traced_memory()[0] - base) / n
    base = tracemalloc.get_traced_memory()[0]
    shingles = [frozenset(list(a.shingles)) for a in held]
    out["term_set"] = (tracemalloc.get_traced_memory()[0] - base) / n
    base = tracemalloc.get_traced_memory()[0]
    sketches = [type(a.sketch)(values=a.sketch.values.copy(), template=a.sketch._template) for a in held]  # as in the clusterer
    out["sketch"] = (tracemalloc.get_traced_memory()[0] - base) / n
    base = tracemalloc.get_traced_memory()[0]
    index = make_index("datasketch", clusterer.settings)
    for a in held:
        index.insert(a.id, a.sketch)  # type: ignore[attr-defined]
    out["lsh_datasketch"] = (tracemalloc.get_traced_memory()[0] - base) / n
    base = tracemalloc.get_traced_memory()[0]
    compact = make_index("product", clusterer.settings)
    compact.insert_many((a.id, a.sketch) for a in held)  # type: ignore[attr-defined]
    out["lsh_product"] = (tracemalloc.get_traced_memory()[0] - base) / n
    tracemalloc.stop()
    del vecs, shingles, sketches, index, compact
    return {k: round(v) for k, v in out.items()}


class Writer:
    """Stores what the daemon stores, in bulk: stories, clustered articles, signatures."""

    def __init__(self, path: Path) -> None:
        self.storage = open_storage(f"sqlite:///{path}")
        self.rows: list[dict[str, object]] = []
        self.sigs: list[dict[str, object]] = []
        self.stories: list[dict[str, object]] = []
        self.seq = 0

    def story(self, story_id: int, item: synthetic.Item) -> None:
        self.stories.append(
            {
                "id": story_id,
                "headline": item.title,
                "created_at": item.published,
                "updated_at": item.published,
                "first_published": item.published,
                "last_published": item.published,
                "article_count": 1,
                "source_count": 1,
            }
        )

    def placeholder_story(self, story_id: int) -> None:
        self.stories.append(
            {
                "id": story_id, "headline": "-", "created_at": NOW, "updated_at": NOW,
                "first_published": NOW, "last_published": NOW, "article_count": 0, "source_count": 0,
            }
        )

    def article(
        self, item: synthetic.Item, story_id: int, signal: str, signature: bytes, params: str
    ) -> None:
        self.seq += 1
        aid = item.index + 1
        self.rows.append(
            {
                "id": aid,
                "feed_id": None,
                "key": f"k{aid}",
                "url": f"https://o{item.outlet}.example/{aid}",
                "title": item.title,
                "summary": item.summary[:500],
                "content_html": "",
                "text": item.text,
                "author": None,
                "source": f"outlet {item.outlet}",
                "published": item.published,
                "updated": item.published,
                "fetched_at": item.published,
                "dated": True,
                "content_hash": "0" * 64,
                "clustered": True,
                "cluster_seq": self.seq,
                "story_id": story_id,
                "score": 1.0,
                "signal": signal,
                "copy_of": None,
            }
        )
        self.sigs.append({"article_id": aid, "params": params, "hashvalues": signature})
        if len(self.rows) >= 5000:
            self.flush()

    def flush(self) -> None:
        with self.storage.engine.begin() as conn:
            if self.stories:
                conn.execute(insert(stories), self.stories)
            if self.rows:
                before = conn.execute(select(func.coalesce(func.max(articles.c.id), 0))).scalar_one()
                conn.execute(insert(articles), self.rows)
                index_for_search(conn, before)  # what Storage.save_entries does
                conn.execute(insert(signatures), self.sigs)
        self.rows, self.sigs, self.stories = [], [], []


def restart(writer: Writer, settings: ClusterSettings, workers: int = REBUILD_WORKERS) -> dict[str, float]:
    """The daemon's restart: a fresh engine rebuilt from the stored articles and signatures
    (``ClusterEngine.rebuild``), timed; and, before it, one read of what it reads, timed on
    its own and counting the articles the rebuild restores ``transient`` (older-window
    stories with no article in the newer window: only their IDF counts are replayed)."""
    writer.flush()
    storage = writer.storage
    window = timedelta(hours=settings.window_hours)
    started = time.perf_counter()
    since = storage.latest_published() - 2 * window
    keep = storage.window_stories(since, storage.latest_published(dated_since=since) - window - timedelta(seconds=1))
    transient = sum(1 for row in storage.clustered_texts(since=since) if row.story_id not in keep)
    read_s = time.perf_counter() - started
    engine = ingest.ClusterEngine(settings, rebuild_workers=workers)
    started = time.perf_counter()
    cpu = time.process_time()
    count = engine.rebuild(storage)
    seconds = time.perf_counter() - started
    return {
        "restored": count,
        "transient": transient,
        "rebuild_s": seconds,
        "rebuild_cpu_s": time.process_time() - cpu,
        "db_read_s": read_s,
        "resident_after": len(engine.clusterer),
        "workers": workers,
    }


def restart_mode(args: argparse.Namespace, sizes: list[int]) -> list[dict[str, object]]:
    """The daemon's restart at any size, without deciding a million articles first: the
    stream is stored as the daemon stores it (articles, their MinHash signatures, stories),
    each article in its gold story (a restart replays the stored assignments, whoever made
    them), and at each checkpoint a fresh engine is rebuilt from the database and timed."""
    from aggregator.cluster.features import extract, sketch_terms
    from aggregator.cluster.sketch import Sketcher, SketchParams

    settings = ClusterSettings()
    params = settings.signature_params()
    sketcher = Sketcher(SketchParams(settings.num_perm, settings.seed, settings.scheme))
    total = sizes[-1]
    days = total / args.rate / 24
    tmp = tempfile.TemporaryDirectory()
    writer = Writer(Path(tmp.name) / "scale.db")
    print(
        f"restart mode: {total:,} {args.length} articles at {args.rate:,.0f}/h over {days:.1f} days stored; "
        f"the rebuild reads two {settings.window_hours:.0f} h windows (up to {args.rate * settings.window_hours * 2:,.0f}) "
        f"with {args.rebuild_workers} helper process(es); "
        f"load {load()}",
        file=sys.stderr,
    )
    seen: set[int] = set()
    results: list[dict[str, object]] = []
    started = time.perf_counter()
    for item in synthetic.Stream(1, length=args.length, days=days).items(total):
        story_id = item.event + 1
        if story_id not in seen:
            seen.add(story_id)
            writer.story(story_id, item)
        sketch = sketcher.sketch(sketch_terms(extract(item.title, item.text)))
        writer.article(item, story_id, "new", sketcher.to_bytes(sketch), params)
        n = item.index + 1
        if n in sizes:
            row: dict[str, object] = {"articles": n, "stored_s": round(time.perf_counter() - started, 1)}
            row.update(restart(writer, settings, args.rebuild_workers))
            row["load"] = load()
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    writer.storage.close()
    tmp.cleanup()
    return results


class DatasketchIndex:
    """datasketch's own in-memory ``MinHashLSH``, the in-process index before issue 8
    (``--index datasketch``): the reference the product index is compared with."""

    def __init__(self, params: object, threshold: float) -> None:
        from datasketch import MinHashLSH

        self._lsh = MinHashLSH(threshold=threshold, num_perm=params.num_perm)  # type: ignore[attr-defined]
        self.bands = (self._lsh.b, self._lsh.r)

    def insert(self, key: object, sketch: object) -> None:
        self._lsh.insert(key, sketch._m, check_duplication=False)  # type: ignore[attr-defined]

    def query(self, sketch: object) -> list[object]:
        return self._lsh.query(sketch._m)  # type: ignore[attr-defined]

    def remove(self, key: object) -> None:
        if key in self._lsh:
            self._lsh.remove(key)

    def __contains__(self, key: object) -> bool:
        return key in self._lsh

    def __len__(self) -> int:
        return len(self._lsh.keys.keys())

    def insert_many(self, items: list[tuple[int, bytes]], sketcher: object) -> int:
        for key, blob in items:  # no bulk path: one MinHash and one insert per article
            self.insert(key, sketcher.from_bytes(blob))  # type: ignore[attr-defined]
        return len(items)


def make_index(kind: str, settings: ClusterSettings) -> object:
    from aggregator.cluster.sketch import CandidateIndex, SketchParams

    params = SketchParams(settings.num_perm, settings.seed, settings.scheme)
    return CandidateIndex(params, settings.threshold) if kind == "product" else DatasketchIndex(params, settings.threshold)


def index_bytes(index: object) -> int | None:
    """Bytes held by the product index's containers: numpy runs and slot arrays, the
    key <-> slot dict and list, the newest articles' dict (not the key objects: the
    article ids are the clusterer's)."""
    local = getattr(index, "_local", None)
    if local is None:
        return None
    return local.memory_bytes()


def window_signatures(storage: object, since: datetime, params: str) -> list[tuple[int, bytes]]:
    """Every stored signature of the clustering window, in one query on the product's
    tables (what a restart reads): (article id, hash values) in clustering order."""
    from sqlalchemy import select

    query = (
        select(signatures.c.article_id, signatures.c.hashvalues)
        .join(articles, articles.c.id == signatures.c.article_id)
        .where(
            articles.c.clustered.is_(True),
            articles.c.published >= since,
            signatures.c.params == params,
        )
        .order_by(articles.c.cluster_seq)
    )
    with storage.engine.connect() as conn:  # type: ignore[attr-defined]
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def recycled(
    items: Iterator[synthetic.Item], total: int, days: float, pool: int
) -> Iterator[synthetic.Item]:
    """The stream's items; with ``pool``, only the first ``pool`` are generated and the
    later ones are placeholders at their place in time (index_mode gives them a pooled
    sketch)."""
    if not pool:
        yield from items
        return
    for item in items:
        yield item
        if item.index + 1 >= pool:
            break
    step = days * 86400.0 / max(total, 1)
    for index in range(pool, total):
        yield synthetic.Item(index, -1, 0, "", "", "", synthetic.EPOCH + timedelta(seconds=index * step), None)


def index_mode(
    args: argparse.Namespace, sizes: list[int]
) -> tuple[list[dict[str, object]], dict[str, float]]:
    """The candidate index alone, at any size: every article's sketch is inserted, articles
    leaving the 72-hour window are removed, and one article in ``--query-every`` is also
    queried (queries do not change the index). Every article and its signature is written
    to a SQLite database of the product's schema, as the daemon stores them. Restart: the
    window's signatures read in one query, then the index built from them in bulk
    (``CandidateIndex.insert_many``)."""
    import collections
    import tracemalloc

    settings = ClusterSettings()
    params = settings.signature_params()
    total = sizes[-1]
    days = total / args.rate / 24
    window = settings.window_hours * 3600.0
    clusterer = Clusterer(settings)  # only for prepare(): features + sketch, as in production
    sketcher = clusterer._sketcher
    index = make_index(args.index, settings)
    tmp = tempfile.TemporaryDirectory()
    writer = None if args.no_restart else Writer(Path(tmp.name) / "scale.db")
    if writer is not None:
        writer.placeholder_story(1)  # every article in one story: the index does not decide
    held: collections.deque[tuple[float, int]] = collections.deque()
    cost = {"query": 0.0, "insert": 0.0, "remove": 0.0, "prepare": 0.0}
    calls = {"query": 0, "insert": 0, "remove": 0, "prepare": 0}
    hits = 0
    base_rss = rss_bytes()
    results: list[dict[str, object]] = []
    timed_from = {s - min(args.window, s // 2) for s in sizes}
    print(
        f"index mode ({args.index}): {total:,} {args.length} articles at {args.rate:,.0f}/h over {days:.1f} days; "
        f"window {settings.window_hours:.0f} h holds up to {args.rate * settings.window_hours:,.0f}; load {load()}",
        file=sys.stderr,
    )
    clock = time.process_time
    pool: list[tuple[bytes, int, str]] = []  # --recycle: (signature, outlet, title) of the first articles
    pool_bytes = 0
    for item in recycled(synthetic.Stream(1, length=args.length, days=days).items(total), total, days, args.recycle):
        n = item.index + 1
        if n in timed_from:
            for k in cost:
                cost[k], calls[k] = 0.0, 0
            hits = 0
        a = clock()
        if args.recycle and n > args.recycle:  # a sketch of the pool (its original left the window long ago)
            blob, outlet, title = pool[(n - 1) % args.recycle]
            item = dataclasses.replace(item, outlet=outlet, title=title, summary=title)
            sketch = sketcher.from_bytes(blob)
        else:
            sketch = clusterer.prepare(Document(n, item.title, item.text, item.published)).sketch
            if args.recycle:
                pool.append((sketcher.to_bytes(sketch), item.outlet, item.title))
                pool_bytes += len(pool[-1][0]) + len(item.title) + 150  # blob, title, tuple and str headers
        b = clock()
        cost["prepare"] += b - a
        calls["prepare"] += 1
        t = item.published.timestamp()
        while held and held[0][0] < t - window:
            _, old = held.popleft()
            a = clock()
            index.remove(old)  # type: ignore[attr-defined]
            cost["remove"] += clock() - a
            calls["remove"] += 1
        if n % args.query_every == 0:
            a = clock()
            hits += len(index.query(sketch))  # type: ignore[attr-defined]
            cost["query"] += clock() - a
            calls["query"] += 1
        a = clock()
        index.insert(n, sketch)  # type: ignore[attr-defined]
        cost["insert"] += clock() - a
        calls["insert"] += 1
        held.append((t, n))
        if writer is not None:
            writer.article(item, 1, "new", sketcher.to_bytes(sketch), params)
        if n in sizes:
            rss = rss_bytes() - base_rss
            live = index_bytes(index)
            row: dict[str, object] = {
                "articles": n,
                "resident": len(held),
                "rss_mb": round(rss / 2**20, 1),
                "bytes_per_article": round(rss / n),
                "bytes_per_resident": round(rss / len(held)),
                "index_bytes_per_resident": None if live is None else round(live / len(held)),
                "recycle_pool_mb": round(pool_bytes / 2**20, 1),
                "bytes_per_article_without_pool": round((rss - pool_bytes) / n),
                **{f"{k}_us": cost[k] / max(calls[k], 1) * 1e6 for k in cost},
                "hits_per_query": hits / max(calls["query"], 1),
                "load": load(),
            }
            if writer is not None:
                writer.flush()
                # restart: a new process reads the window's signatures and builds the index
                started = time.perf_counter()
                rows = window_signatures(writer.storage, item.published - timedelta(seconds=window), params)
                read_s = time.perf_counter() - started
                tracemalloc.start()
                traced = tracemalloc.get_traced_memory()[0]
                started = time.perf_counter()
                cpu = time.process_time()
                fresh = make_index(args.index, settings)
                if args.index == "product":
                    fresh.insert_many(rows)  # type: ignore[attr-defined]
                else:
                    fresh.insert_many(rows, sketcher)  # type: ignore[attr-defined]
                build_s = time.perf_counter() - started
                build_cpu_s = time.process_time() - cpu
                built, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
                row.update(
                    restored=len(rows),
                    db_read_s=read_s,
                    index_build_s=build_s,
                    index_build_cpu_s=build_cpu_s,
                    rebuild_s=read_s + build_s,
                    fresh_index_bytes_per_resident=round((built - traced) / max(len(rows), 1)),
                    fresh_index_peak_bytes_per_resident=round((peak - traced) / max(len(rows), 1)),
                )
                del fresh, rows
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    if writer is not None:
        writer.storage.close()
    tmp.cleanup()
    first, last = results[0], results[-1]
    growth = {k: last[k] / first[k] for k in ("query_us", "insert_us") if first[k]}  # type: ignore[operator]
    both = [r["query_us"] / args.query_every + r["insert_us"] for r in (first, last)]  # type: ignore[operator]
    growth["query+insert per article"] = both[1] / both[0]
    return results, growth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        default="index",
        choices=("index", "clusterer", "restart"),
        help="the candidate index alone (default; 1M in ~10 min), the whole clusterer, or the "
        "daemon's restart (the stream stored with its gold stories, then rebuilt; 1M in ~10 min)",
    )
    parser.add_argument("--query-every", type=int, default=10, help="index mode: query one article in N")
    parser.add_argument("--fast", action="store_true", help="small sizes, well under a minute (CI)")
    parser.add_argument(
        "--sizes", default="100000,300000,1000000", help="checkpoints (articles in the stream)"
    )
    parser.add_argument("--rate", type=float, default=1_000_000 / (28 * 24), help="articles per hour")
    parser.add_argument("--length", default="headline", choices=("headline", "full", "mixed"))
    parser.add_argument(
        "--index",
        default="product",
        choices=("product", "datasketch"),
        help="the product's CandidateIndex (default) or datasketch's in-memory MinHashLSH",
    )
    parser.add_argument("--no-restart", action="store_true", help="skip the database and the restart timing")
    parser.add_argument("--window", type=int, default=20_000, help="articles timed before each checkpoint")
    parser.add_argument(
        "--recycle",
        type=int,
        default=0,
        help="index mode: prepare only the first N articles (N > the window, e.g. 120000) and give the "
        "later ones those sketches again, in order, with their own ids and times: the index sees "
        "the same window and churn at ~1/8 of the CPU (features and MinHash are most of it)",
    )
    parser.add_argument(
        "--rebuild-workers", type=int, default=REBUILD_WORKERS,
        help=f"helper processes of the rebuild (the rebuild_workers setting; default {REBUILD_WORKERS}, the daemon's)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.mode == "index":
        sizes = [5_000, 15_000] if args.fast else sorted(int(s) for s in args.sizes.split(","))
        results, growth = index_mode(args, sizes)
        last = results[-1]
        missed = []
        if last["bytes_per_article"] > MAX_BYTES_PER_ARTICLE:  # type: ignore[operator]
            missed.append("RAM per article")
        if any(g > MAX_COST_GROWTH for g in growth.values()):
            missed.append("cost growth")
        if "rebuild_s" in last and last["rebuild_s"] > MAX_RESTART_S:  # type: ignore[operator]
            missed.append("restart")
        if args.json:
            print(
                json.dumps(
                    {
                        "mode": "index",
                        "index": args.index,
                        "results": results,
                        "growth": growth,
                        "missed": missed,
                    },
                    indent=2,
                )
            )
        else:
            print(f"candidate index ({args.index}) alone; RSS growth of the process")
            print(
                f"{'articles':>10} {'resident':>9} {'RSS MB':>7} {'B/art':>7} {'B/resident':>10} "
                f"{'index B/res':>11} {'fresh B/res':>11} {'query us':>9} {'hits/q':>7} {'insert us':>9} "
                f"{'remove us':>9} {'read s':>7} {'build s':>7} {'restart s':>9} {'restored':>9} {'load':>15}"
            )
            for r in results:
                print(
                    f"{r['articles']:>10,} {r['resident']:>9,} {r['rss_mb']:>7.0f} {r['bytes_per_article']:>7,} "
                    f"{r['bytes_per_resident']:>10,} {r['index_bytes_per_resident'] or 0:>11,} "
                    f"{r.get('fresh_index_bytes_per_resident', 0):>11,} {r['query_us']:>9.1f} "
                    f"{r['hits_per_query']:>7.0f} {r['insert_us']:>9.1f} {r['remove_us']:>9.1f} "
                    f"{r.get('db_read_s', float('nan')):>7.2f} {r.get('index_build_s', float('nan')):>7.2f} "
                    f"{r.get('rebuild_s', float('nan')):>9.2f} {r.get('restored', 0):>9,} {r['load']:>15}"
                )
            print(
                f"RAM: {last['bytes_per_article']:,} B of RSS per article at {last['articles']:,} "
                f"(target <= {MAX_BYTES_PER_ARTICLE:,}); cost growth {results[0]['articles']:,} -> {last['articles']:,}: "
                + ", ".join(f"{k} x{v:.2f}" for k, v in growth.items())
                + f" (target <= {MAX_COST_GROWTH}); restart {last.get('rebuild_s', float('nan')):.1f} s "
                f"(target <= {MAX_RESTART_S:.0f} s: read + index build); missed: {', '.join(missed) or 'none'}"
            )
        return 1 if (args.check and missed) else 0
    if args.mode == "restart":
        if args.fast:  # two windows and more in 30,000 articles: the older window's stories replayed
            sizes, args.rate = [10_000, 30_000], 250.0
        else:
            sizes = sorted(int(s) for s in args.sizes.split(","))
        results = restart_mode(args, sizes)
        last = results[-1]
        missed = ["restart"] if last["rebuild_s"] > MAX_RESTART_S else []  # type: ignore[operator]
        if args.json:
            print(json.dumps({"mode": "restart", "results": results, "missed": missed}, indent=2))
        else:
            print(f"{'articles':>10} {'restored':>9} {'transient':>9} {'read s':>7} {'rebuild s':>9} {'cpu s':>7} "
                  f"{'us/article':>10} {'held after':>10} {'load':>15}")
            for r in results:
                print(
                    f"{r['articles']:>10,} {r['restored']:>9,} {r['transient']:>9,} {r['db_read_s']:>7.2f} "
                    f"{r['rebuild_s']:>9.2f} {r['rebuild_cpu_s']:>7.2f} "
                    f"{r['rebuild_s'] / max(r['restored'], 1) * 1e6:>10.0f} "  # type: ignore[operator]
                    f"{r['resident_after']:>10,} {r['load']:>15}"
                )
            print(
                f"whole-engine restart at {last['articles']:,}: {last['rebuild_s']:.1f} s "
                f"(target <= {MAX_RESTART_S:.0f} s); missed: {', '.join(missed) or 'none'}"
            )
        return 1 if (args.check and missed) else 0
    sizes = [3_000, 8_000] if args.fast else sorted(int(s) for s in args.sizes.split(","))
    total = sizes[-1]
    days = total / args.rate / 24
    settings = ClusterSettings()
    stream = synthetic.Stream(1, length=args.length, days=days)
    clusterer = Clusterer(settings)
    if args.index == "datasketch":
        clusterer._index = make_index("datasketch", settings)  # type: ignore[assignment]
    timed = Timed(clusterer._index)
    clusterer._index = timed  # type: ignore[assignment]
    params = settings.signature_params()
    tmp = tempfile.TemporaryDirectory()
    writer = None if args.no_restart else Writer(Path(tmp.name) / "scale.db")
    base_rss = rss_bytes()
    print(
        f"stream: {total:,} {args.length} articles at {args.rate:,.0f}/h over {days:.1f} days; "
        f"window {settings.window_hours:.0f} h holds up to {args.rate * settings.window_hours:,.0f}; "
        f"load {load()}",
        file=sys.stderr,
    )
    next_story = 0
    results = []
    t_prepare = t_decide = t_add = 0.0
    timed_n = 0
    started = time.perf_counter()
    for item in stream.items(total):
        n = item.index + 1
        if n in [s - min(args.window, s // 2) for s in sizes]:
            timed.reset()
            t_prepare = t_decide = t_add = 0.0
            timed_n = 0
        doc = Document(n, item.title, item.text, item.published, f"outlet {item.outlet}")
        a = time.process_time()
        prepared = clusterer.prepare(doc)
        b = time.process_time()
        decision = clusterer.decide(prepared)
        c = time.process_time()
        story_id = decision.story_id
        if story_id is None:
            next_story += 1
            story_id = next_story
            if writer is not None:
                writer.story(story_id, item)
        if decision.merge:
            clusterer.merge(story_id, decision.merge)
        clusterer.add(prepared, story_id)
        d = time.process_time()
        t_prepare += b - a
        t_decide += c - b
        t_add += d - c
        timed_n += 1
        if writer is not None:
            writer.article(item, story_id, decision.signal, clusterer.signature(prepared), params)
        if n in sizes:
            rss = rss_bytes() - base_rss
            resident = len(clusterer)
            row: dict[str, object] = {
                "articles": n,
                "resident": resident,
                "elapsed_s": round(time.perf_counter() - started, 1),
                "rss_mb": round(rss / 2**20, 1),
                "bytes_per_article": round(rss / n),
                "bytes_per_resident": round(rss / max(resident, 1)),
                "query_us": timed.seconds["query"] / max(timed.calls["query"], 1) * 1e6,
                "insert_us": timed.seconds["insert"] / max(timed.calls["insert"], 1) * 1e6,
                "remove_us": timed.seconds["remove"] / max(timed.calls["remove"], 1) * 1e6,
                "prepare_us": t_prepare / timed_n * 1e6,
                "decide_us": t_decide / timed_n * 1e6,
                "add_us": t_add / timed_n * 1e6,
                "timed_articles": timed_n,
                "load": load(),
            }
            row["bytes_per_resident_by_part"] = breakdown(clusterer)
            if writer is not None:
                row.update(restart(writer, settings))
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    if writer is not None:
        writer.storage.close()
    tmp.cleanup()

    first, last = results[0], results[-1]
    growth = {k: last[k] / first[k] for k in ("query_us", "insert_us") if first[k]}  # type: ignore[operator]
    missed = []
    if last["bytes_per_article"] > MAX_BYTES_PER_ARTICLE:  # type: ignore[operator]
        missed.append("RAM per article")
    if any(g > MAX_COST_GROWTH for g in growth.values()):
        missed.append("cost growth")
    if "rebuild_s" in last and last["rebuild_s"] > MAX_RESTART_S:  # type: ignore[operator]
        missed.append("restart")
    if args.json:
        print(json.dumps({"results": results, "growth": growth, "missed": missed}, indent=2))
    else:
        print(
            f"{'articles':>10} {'resident':>9} {'RSS MB':>8} {'B/art':>7} {'B/resident':>10} {'query us':>9} "
            f"{'insert us':>9} {'prepare us':>10} {'decide us':>9} {'add us':>7} {'restart s':>9} {'restored':>9}"
            f" {'load':>15}"
        )
        for r in results:
            print(
                f"{r['articles']:>10,} {r['resident']:>9,} {r['rss_mb']:>8.0f} {r['bytes_per_article']:>7,} "
                f"{r['bytes_per_resident']:>10,} {r['query_us']:>9.1f} {r['insert_us']:>9.1f} "
                f"{r['prepare_us']:>10.1f} {r['decide_us']:>9.1f} {r['add_us']:>7.1f} "
                f"{r.get('rebuild_s', float('nan')):>9.1f} {r.get('restored', 0):>9,} {r['load']:>15}"
            )
        print(
            f"cost growth {first['articles']:,} -> {last['articles']:,}: "
            + ", ".join(f"{k} x{v:.2f}" for k, v in growth.items())
            + f" (target <= {MAX_COST_GROWTH}); RAM target <= {MAX_BYTES_PER_ARTICLE} B/article; "
            f"restart target <= {MAX_RESTART_S:.0f} s; missed: {', '.join(missed) or 'none'}"
        )
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
