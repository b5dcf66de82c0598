"""Memory of the daemon after ingesting the demo and 100k synthetic articles, and what bounds it.

Each configuration runs in a fresh process (``--child``) so that its RSS is its own. The
process builds what ``aggregator run`` builds (Storage on SQLite, the ClusterEngine, the
Flask app), ingests the bundled demo feeds (OPML import + one pass), then stores and
clusters ``--articles`` synthetic headline articles (``benchmarks/synthetic.py``) through
``Storage.save_entries`` and ``ingest.cluster_pending`` in batches of 500, as the
daemon's ticks do, arriving at ``--rate`` per hour, and renders the river and a story
feed. It prints RSS after the demo and at checkpoints, the peak, the articles resident
in the clustering window, and the sizes of the caches that hold memory.

What bounds the memory (all settings or constants, none grows with the database):

* the clustering index holds the articles of the last ``cluster_window_hours`` (72 h)
  only: at ``--rate`` articles/h (default: the 100k spread over four weeks, 149/h) that
  is ``rate * 72`` articles (10,700); the second configuration runs the same stream with
  a 24 h window (3,600), to show the bound. (Memory per resident article is the figure
  to scale by: ``benchmarks/scale.py`` has the index at 1M.)
* the stemmer's ``lru_cache`` (200,000 words), SQLAlchemy's statement cache (500
  statements per engine) and connection pool (5 + overflow), waitress's threads
  (``web_threads``).

    python benchmarks/memory.py          # 100,000 articles, two configurations (~10 minutes)
    python benchmarks/memory.py --fast   # CI: 3,000 articles, one configuration
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def child(articles: int, rate: float, window: float, workdir: str) -> dict[str, object]:
    import synthetic

    from aggregator import ingest
    from aggregator.cli import demo_dir, import_opml, make_engine
    from aggregator.cluster import features
    from aggregator.config import Settings
    from aggregator.models import ParsedEntry
    from aggregator.storage import open_storage
    from aggregator.storage.facade import StoryFilter
    from aggregator.web import create_app

    out: dict[str, object] = {
        "articles": articles,
        "rate_per_h": round(rate),
        "window_h": window,
        "rss_start_mb": round(rss_mb(), 1),
    }
    database = f"sqlite:///{workdir}/memory.db"
    settings = Settings(
        database_url=database,
        allow_private=True,
        allow_file_urls=True,
        cluster_window_hours=window,
        base_url="http://127.0.0.1:8080",
    )
    storage = open_storage(database)
    engine = make_engine(settings)
    app = create_app(settings, storage)
    client = app.test_client()
    import_opml(storage, demo_dir() / "demo.opml")
    ingest.run_pass(storage, engine, settings, all_feeds=True)
    assert client.get("/").status_code == 200
    out["rss_after_demo_mb"] = round(rss_mb(), 1)
    days = articles / rate / 24
    stream = synthetic.Stream(5, length="headline", days=days).items(articles)
    start = datetime.now(UTC) - timedelta(days=days)
    checkpoints = {articles // 4, articles // 2, articles}
    curve = []
    started = time.perf_counter()
    done = 0
    batch: list[ParsedEntry] = []
    for item in stream:
        when = start + (item.published - synthetic.EPOCH)
        batch.append(
            ParsedEntry(
                key=f"s{item.index}",
                title=item.title,
                link=f"https://o{item.outlet}.example/{item.index}",
                summary=item.summary,
                content_html=f"<p>{item.summary}</p>",
                text=item.summary,
                author=None,
                published=when,
                updated=when,
                content_hash=f"{item.index:064d}",
            )
        )
        if len(batch) == 500 or item.index + 1 == articles:
            storage.save_entries(None, batch, source=f"Outlet {item.outlet}", fetched_at=when)
            ingest.cluster_pending(storage, engine)
            done += len(batch)
            batch = []
            if any(done >= c > done - 500 for c in checkpoints):
                curve.append(
                    {"articles": done, "rss_mb": round(rss_mb(), 1), "resident": len(engine.clusterer)}
                )
    out["ingest_s"] = round(time.perf_counter() - started, 1)
    top = storage.find_stories(StoryFilter(), limit=1, order="sources").stories[0]
    for path in ("/", "/feed.atom", f"/stories/{top.id}", f"/stories/{top.id}/feed.atom", "/feeds"):
        assert client.get(path).status_code == 200, path
    out["curve"] = curve
    out["rss_final_mb"] = round(rss_mb(), 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["resident_in_window"] = len(engine.clusterer)
    out["stem_cache"] = features.stem.cache_info().currsize
    out["load"] = load()
    storage.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="3,000 articles, one configuration (CI)")
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument(
        "--rate",
        type=float,
        default=100_000 / (28 * 24),
        help="articles per hour (default: 100k over four weeks, 149/h)",
    )
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(
            json.dumps(child(int(args.child[0]), float(args.child[1]), float(args.child[2]), args.child[3]))
        )
        return 0
    if args.fast:
        configs = [(3_000, args.rate, 72.0)]
    else:
        n = args.articles
        configs = [(n, args.rate, 72.0), (n, args.rate, 24.0)]
    results = []
    for n, rate, window in configs:
        with tempfile.TemporaryDirectory() as tmp:
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(n), str(rate), str(window), tmp],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print("daemon components (Storage/SQLite, ClusterEngine, Flask app) in a fresh process; RSS in MB")
    print(
        f"{'articles':>9} {'rate/h':>7} {'window h':>8} {'demo':>6} {'final':>7} {'peak':>7} {'resident':>9} "
        f"{'MB/1k resident':>14} {'stem cache':>10} {'ingest s':>8} {'load':>15}"
    )
    for r in results:
        grown = r["rss_final_mb"] - r["rss_after_demo_mb"]
        print(
            f"{r['articles']:>9,} {r['rate_per_h']:>7,} {r['window_h']:>8.0f} {r['rss_after_demo_mb']:>6.0f} "
            f"{r['rss_final_mb']:>7.0f} {r['peak_rss_mb']:>7.0f} {r['resident_in_window']:>9,} "
            f"{grown / max(r['resident_in_window'], 1) * 1000:>14.1f} {r['stem_cache']:>10,} {r['ingest_s']:>8.1f} "
            f"{r['load']:>15}"
        )
        print(
            "          curve: "
            + ", ".join(
                f"{c['articles']:,}: {c['rss_mb']:.0f} MB ({c['resident']:,} resident)" for c in r["curve"]
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
