"""The clustering index at scale: RAM per article, per-article cost, and restart time.

A synthetic stream (``benchmarks/synthetic.py``, ``--length headline`` by default: a
title and a one-sentence summary, what most RSS entries carry; ``mixed`` adds 30 %
600-word bodies) arrives at a fixed rate, ``--rate`` articles per hour (default 1,488/h:
one million articles over four weeks). Articles older than the 72-hour clustering window
leave the index, so it holds at most ``rate * 72`` articles (107,143 at the default
rate): memory and cost are bounded by the window, not by the stream.

``--mode index`` (default; 1M in 10-20 minutes): the candidate index alone, the
production ``CandidateIndex`` (datasketch ``MinHashLSH``) or, with ``--index compact``,
the compact prototype defined here (proposed for ``cluster/sketch.py``). Every article is
prepared (features + MinHash, as in production), inserted, removed when it leaves the
window; one in ``--query-every`` (10) is also queried. Restart: the index rebuilt from the
signatures stored in SQLite (the window's rows read in one query).

``--mode clusterer`` (slow: ms per article once the window is full): the whole
``Clusterer`` (prepare + decide + add), every article also written to a SQLite database as
the daemon stores it, and the daemon's restart path (``ClusterEngine.rebuild``) timed.

At each checkpoint (``--sizes``, default 100k, 300k and 1M) it prints the articles in the
stream and resident in the window, the RSS growth of the process per stream article and
per resident article (target: <= 2 KB per article at 1M), CPU microseconds per query,
insert and removal (target: at 1M within 1.5x of 100k) and the restart time (target:
<= 20 s at 1M).

    python benchmarks/scale.py                     # index mode, 100k / 300k / 1M
    python benchmarks/scale.py --index compact     # the same with the compact prototype
    python benchmarks/scale.py --fast              # CI: index mode at 5k and 15k, under a minute
    python benchmarks/scale.py --mode clusterer --sizes 20000,100000   # the whole clusterer
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from aggregator import ingest  # noqa: E402
from aggregator.cluster import Clusterer, ClusterSettings, Document  # noqa: E402
from aggregator.storage import open_storage  # noqa: E402
from aggregator.storage.facade import articles, signatures, stories  # noqa: E402

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

    def _timed(self, name: str, *args: object) -> object:
        started = time.process_time()  # CPU time: a paused or preempted process is not charged
        result = getattr(self._index, name)(*args)
        self.seconds[name] += time.process_time() - started
        self.calls[name] += 1
        return result

    def query(self, sketch: object) -> object:
        return self._timed("query", sketch)

    def insert(self, key: object, sketch: object) -> None:
        self._timed("insert", key, sketch)

    def remove(self, key: object) -> None:
        self._timed("remove", key)

    def __contains__(self, key: object) -> bool:
        return key in self._index  # type: ignore[operator]

    def reset(self) -> None:
        for name in self.seconds:
            self.seconds[name] = 0.0
            self.calls[name] = 0


class CompactIndex:
    """Prototype of a compact banded LSH index (proposed for ``cluster/sketch.py``).

    Same contract as ``CandidateIndex``: ``insert(key, sketch)``, ``query(sketch)``
    (keys sharing at least one band), ``remove(key)``, ``in``. With 128 32-bit MinHash
    values in 64 bands of 2 rows, a band *is* one uint64 (its two values side by
    side), so band keys need no hashing and have no false collisions within a band;
    the band number is folded in by XOR with a per-band constant. Entries live in a
    few numpy runs sorted by key (uint64 key + int64 article id: 16 bytes per band per
    article, 1 KiB per article), LSM-style: recent inserts sit in a dict (and a list of
    arrays) until ``buffer`` articles have arrived, then become a sorted run; runs of
    similar size are merged (each entry is re-sorted O(log n) times in all), and
    removed keys are dropped at merges. A query is one ``searchsorted`` of 64 keys per
    run (3-6 runs) plus 64 dict lookups.
    """

    def __init__(self, bands: int = 64, rows: int = 2, buffer: int = 2048) -> None:
        import numpy as np

        assert rows == 2, "the prototype packs 2 rows of 32 bits into one uint64"
        self.np = np
        self.bands = (bands, rows)
        rng = np.random.default_rng(12345)
        self._salt = rng.integers(0, 2**63, size=bands, dtype=np.uint64)
        self._runs: list[tuple[object, object]] = []  # (sorted keys, ids), biggest first
        self._recent: dict[int, int | list[int]] = {}
        self._recent_keys: list[object] = []
        self._recent_ids: list[int] = []
        self._buffer = buffer
        self._live: set[int] = set()
        self._dead: set[int] = set()

    def _band_keys(self, sketch: object) -> object:
        np = self.np
        values = sketch._m.hashvalues  # type: ignore[attr-defined]
        return np.ascontiguousarray(values, dtype=np.uint32).view(np.uint64) ^ self._salt

    def insert(self, key: int, sketch: object) -> None:
        self._live.add(key)
        band_keys = self._band_keys(sketch)
        self._recent_keys.append(band_keys)
        self._recent_ids.append(key)
        recent = self._recent  # key -> id, or a list of ids when several (few: no GC-tracked objects)
        for k in band_keys.tolist():
            ids = recent.get(k)
            if ids is None:
                recent[k] = key
            elif type(ids) is list:
                ids.append(key)
            else:
                recent[k] = [ids, key]
        if len(self._recent_ids) >= self._buffer:
            self._flush()

    def query(self, sketch: object) -> list[int]:
        np = self.np
        q = self._band_keys(sketch)
        found: set[int] = set()
        sq = np.sort(q)  # sorted probes: searchsorted walks the run in order (cache-friendly)
        for keys, ids in self._runs:
            lo = np.searchsorted(keys, sq, "left")
            counts = np.searchsorted(keys, sq, "right") - lo
            total = int(counts.sum())
            if total:  # every matching position at once: lo[j] .. lo[j] + counts[j]
                starts = np.repeat(lo - (np.cumsum(counts) - counts), counts)
                found.update(ids[starts + np.arange(total)].tolist())  # type: ignore[index]
        recent = self._recent
        for k in q.tolist():
            ids = recent.get(k)
            if ids is not None:
                if type(ids) is list:
                    found.update(ids)
                else:
                    found.add(ids)
        found.intersection_update(self._live)  # removed keys leave answers at once
        return list(found)

    def remove(self, key: int) -> None:
        if key in self._live:
            self._live.discard(key)
            self._dead.add(key)

    def __contains__(self, key: object) -> bool:
        return key in self._live

    def _flush(self) -> None:
        np = self.np
        n = len(self._recent_ids)
        keys = np.concatenate(self._recent_keys)
        ids = np.repeat(np.asarray(self._recent_ids, dtype=np.int64), self.bands[0])
        order = np.argsort(keys, kind="stable")
        self._runs.append((keys[order], ids[order]))
        self._recent, self._recent_keys, self._recent_ids = {}, [], []
        # merge while the newest run is at least half the size of the one before it
        while len(self._runs) >= 2 and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0]):  # type: ignore[arg-type]
            (k2, i2), (k1, i1) = self._runs.pop(), self._runs.pop()
            keys, ids = np.concatenate((k1, k2)), np.concatenate((i1, i2))
            if self._dead:
                dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
                keep = ~np.isin(ids, dead)
                keys, ids = keys[keep], ids[keep]
            order = np.argsort(keys, kind="stable")
            self._runs.append((keys[order], ids[order]))
        if self._dead and len(self._runs) == 1:
            self._dead = set()
        del n

    def _merge(self) -> None:
        if self._recent_ids:
            self._flush()

    def nbytes(self) -> int:
        return int(sum(k.nbytes + i.nbytes for k, i in self._runs))  # type: ignore[attr-defined]


def breakdown(clusterer: Clusterer, sample: int = 2000) -> dict[str, float]:
    """Bytes per resident article of each part of the state, measured with tracemalloc
    by rebuilding ``sample`` resident articles' parts (vectors, term sets, sketches,
    LSH entries) from copies."""
    import tracemalloc

    from aggregator.cluster.sketch import CandidateIndex, SketchParams

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
    sketches = [type(a.sketch)(a.sketch._m.copy()) for a in held]  # permutations shared, as in the clusterer
    out["sketch"] = (tracemalloc.get_traced_memory()[0] - base) / n
    s = clusterer.settings
    base = tracemalloc.get_traced_memory()[0]
    index = CandidateIndex(SketchParams(s.num_perm, s.seed, s.scheme), s.threshold)
    for a in held:
        index.insert(a.id, a.sketch)
    out["lsh_datasketch"] = (tracemalloc.get_traced_memory()[0] - base) / n
    base = tracemalloc.get_traced_memory()[0]
    compact = CompactIndex(*index.bands, buffer=n + 1)
    for a in held:
        compact.insert(a.id, a.sketch)
    compact._merge()
    out["lsh_compact"] = (tracemalloc.get_traced_memory()[0] - base) / n
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
                conn.execute(insert(articles), self.rows)
                conn.execute(insert(signatures), self.sigs)
        self.rows, self.sigs, self.stories = [], [], []


def restart(writer: Writer, settings: ClusterSettings) -> dict[str, float]:
    """The daemon's restart: a fresh engine rebuilt from the stored articles and signatures."""
    writer.flush()
    engine = ingest.ClusterEngine(settings)
    started = time.perf_counter()
    since = writer.storage.latest_published() - timedelta(hours=settings.window_hours * 2)
    for _ in writer.storage.clustered_articles(since=since):
        pass
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    count = engine.rebuild(writer.storage)
    seconds = time.perf_counter() - started
    return {
        "restored": count,
        "rebuild_s": seconds,
        "db_read_s": read_s,
        "resident_after": len(engine.clusterer),
    }


def index_mode(
    args: argparse.Namespace, sizes: list[int]
) -> tuple[list[dict[str, object]], dict[str, float]]:
    """The candidate index alone, at any size: every article's sketch is inserted, articles
    leaving the 72-hour window are removed, and one article in ``--query-every`` is also
    queried (queries do not change the index). Restart: the index rebuilt from the
    signatures stored in SQLite (the window's rows read in one query, in bulk)."""
    import collections
    import sqlite3

    import numpy as np

    from aggregator.cluster.sketch import CandidateIndex, SketchParams

    settings = ClusterSettings()
    params = SketchParams(settings.num_perm, settings.seed, settings.scheme)
    total = sizes[-1]
    days = total / args.rate / 24
    window = settings.window_hours * 3600.0
    clusterer = Clusterer(settings)  # only for prepare(): features + sketch, as in production
    index = CandidateIndex(params, settings.threshold) if args.index == "datasketch" else CompactIndex()
    tmp = tempfile.TemporaryDirectory()
    db = sqlite3.connect(Path(tmp.name) / "signatures.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE sig (id INTEGER PRIMARY KEY, published REAL, hashvalues BLOB)")
    db.execute("CREATE INDEX ix_sig_published ON sig (published)")
    pending_rows: list[tuple[int, float, bytes]] = []
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
    for item in synthetic.Stream(1, length=args.length, days=days).items(total):
        n = item.index + 1
        if n in timed_from:
            for k in cost:
                cost[k], calls[k] = 0.0, 0
            hits = 0
        a = clock()
        sketch = clusterer.prepare(Document(n, item.title, item.text, item.published)).sketch
        b = clock()
        cost["prepare"] += b - a
        calls["prepare"] += 1
        t = item.published.timestamp()
        while held and held[0][0] < t - window:
            _, old = held.popleft()
            a = clock()
            index.remove(old)
            cost["remove"] += clock() - a
            calls["remove"] += 1
        if n % args.query_every == 0:
            a = clock()
            hits += len(index.query(sketch))
            cost["query"] += clock() - a
            calls["query"] += 1
        a = clock()
        index.insert(n, sketch)
        cost["insert"] += clock() - a
        calls["insert"] += 1
        held.append((t, n))
        pending_rows.append((n, t, clusterer._sketcher.to_bytes(sketch)))
        if len(pending_rows) >= 20_000:
            db.executemany("INSERT INTO sig VALUES (?, ?, ?)", pending_rows)
            db.commit()
            pending_rows = []
        if n in sizes:
            rss = rss_bytes() - base_rss
            row: dict[str, object] = {
                "articles": n,
                "resident": len(held),
                "rss_mb": round(rss / 2**20, 1),
                "bytes_per_article": round(rss / n),
                "bytes_per_resident": round(rss / len(held)),
                **{f"{k}_us": cost[k] / max(calls[k], 1) * 1e6 for k in cost},
                "hits_per_query": hits / max(calls["query"], 1),
                "load": load(),
            }
            if pending_rows:
                db.executemany("INSERT INTO sig VALUES (?, ?, ?)", pending_rows)
                db.commit()
                pending_rows = []
            # restart: a new process would read the window's signatures and build the index
            started = time.perf_counter()
            rows = db.execute(
                "SELECT id, hashvalues FROM sig WHERE published >= ? ORDER BY id", (t - window,)
            ).fetchall()
            read_s = time.perf_counter() - started
            fresh = (
                CandidateIndex(params, settings.threshold) if args.index == "datasketch" else CompactIndex()
            )
            if args.index == "compact":  # bulk: one array of every band key, one sort
                values = np.frombuffer(b"".join(r[1] for r in rows), dtype="<u4").reshape(len(rows), -1)
                keys = np.ascontiguousarray(values).view(np.uint64) ^ fresh._salt
                ids = np.repeat(
                    np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), keys.shape[1]
                )
                flat = keys.reshape(-1)
                order = np.argsort(flat, kind="stable")
                fresh._runs = [(flat[order], ids[order])]
                fresh._live = {r[0] for r in rows}
            else:
                sketcher = clusterer._sketcher
                for aid, blob in rows:
                    fresh.insert(aid, sketcher.from_bytes(blob))
            row.update(restored=len(rows), db_read_s=read_s, rebuild_s=time.perf_counter() - started)
            del fresh, rows
            results.append(row)
            print(json.dumps(row), file=sys.stderr)
    db.close()
    tmp.cleanup()
    first, last = results[0], results[-1]
    growth = {k: last[k] / first[k] for k in ("query_us", "insert_us") if first[k]}  # type: ignore[operator]
    return results, growth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mode",
        default="index",
        choices=("index", "clusterer"),
        help="the candidate index alone (default; 1M in ~10 min) or the whole clusterer",
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
        default="datasketch",
        choices=("datasketch", "compact"),
        help="the clusterer's MinHashLSH (default) or the CompactIndex prototype",
    )
    parser.add_argument("--no-restart", action="store_true", help="skip the database and the restart timing")
    parser.add_argument("--window", type=int, default=20_000, help="articles timed before each checkpoint")
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
        if last["rebuild_s"] > MAX_RESTART_S:  # type: ignore[operator]
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
                f"{'articles':>10} {'resident':>9} {'RSS MB':>7} {'B/art':>7} {'B/resident':>10} {'query us':>9} "
                f"{'hits/q':>7} {'insert us':>9} {'remove us':>9} {'restart s':>9} {'restored':>9} {'load':>15}"
            )
            for r in results:
                print(
                    f"{r['articles']:>10,} {r['resident']:>9,} {r['rss_mb']:>7.0f} {r['bytes_per_article']:>7,} "
                    f"{r['bytes_per_resident']:>10,} {r['query_us']:>9.1f} {r['hits_per_query']:>7.0f} "
                    f"{r['insert_us']:>9.1f} {r['remove_us']:>9.1f} {r['rebuild_s']:>9.1f} {r['restored']:>9,} "
                    f"{r['load']:>15}"
                )
            print(
                f"cost growth {results[0]['articles']:,} -> {last['articles']:,}: "
                + ", ".join(f"{k} x{v:.2f}" for k, v in growth.items())
                + f" (target <= {MAX_COST_GROWTH}); RAM target <= {MAX_BYTES_PER_ARTICLE} B/article; restart target "
                f"<= {MAX_RESTART_S:.0f} s (index only); missed: {', '.join(missed) or 'none'}"
            )
        return 1 if (args.check and missed) else 0
    sizes = [3_000, 8_000] if args.fast else sorted(int(s) for s in args.sizes.split(","))
    total = sizes[-1]
    days = total / args.rate / 24
    settings = ClusterSettings()
    stream = synthetic.Stream(1, length=args.length, days=days)
    clusterer = Clusterer(settings)
    if args.index == "compact":
        clusterer._index = CompactIndex(*clusterer.bands)  # type: ignore[assignment]
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
