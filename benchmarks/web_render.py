"""How fast the web view renders, on the bundled demo with the database warm.

Loads the demo feeds into a throwaway SQLite database (OPML import, one
ingest-and-cluster pass over every feed), then renders each page N times
through Flask's test client and prints p50/p95/max milliseconds per page.
The target is "well under 100 ms" per page. The render cache is off
(``render_cache_mb = 0``): every request renders (``benchmarks/serve.py`` measures
the cache).

    python benchmarks/web_render.py            # 200 renders of each page
    python benchmarks/web_render.py --fast     # CI: 20 renders, a few seconds
    python benchmarks/web_render.py -n 500 --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from aggregator.cli import demo_dir, import_opml, make_engine
from aggregator.config import Settings
from aggregator.ingest import run_pass
from aggregator.storage import open_storage
from aggregator.web import create_app

TARGET_MS = 100.0


def load_demo(database: Path) -> tuple[Settings, object]:
    settings = Settings(
        database_url=f"sqlite:///{database}",
        allow_private=True,
        allow_file_urls=True,
        base_url="http://127.0.0.1:8080",
        render_cache_mb=0,  # every request renders: this measures rendering, not the render cache
    )
    storage = open_storage(settings.database_url)
    import_opml(storage, demo_dir() / "demo.opml")
    run_pass(storage, make_engine(settings), settings, all_feeds=True)
    return settings, storage


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--iterations", type=int, default=200, help="renders of each page")
    parser.add_argument("--fast", action="store_true", help="few iterations (CI)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    iterations = 20 if args.fast else max(1, args.iterations)

    with tempfile.TemporaryDirectory() as tmp:
        settings, storage = load_demo(Path(tmp) / "demo.db")
        app = create_app(settings, storage)  # type: ignore[arg-type]
        client = app.test_client()
        busiest = storage.find_stories  # type: ignore[attr-defined]
        from aggregator.storage.facade import StoryFilter

        top = busiest(StoryFilter(), limit=1, order="sources").stories[0]
        feed_id = storage.list_feeds()[0].id  # type: ignore[attr-defined]
        pages = {
            "river": "/",
            "river 2+ sources": "/?min_sources=2&order=sources",
            "river search": "/?q=port+strike",
            "river feed+range": f"/?feed={feed_id}&range=30d",
            "story (most sources)": f"/stories/{top.id}",
            "feeds": "/feeds",
        }
        results = {}
        for name, path in pages.items():
            for _ in range(3):  # warm: templates compiled, pages cached by SQLite
                assert client.get(path).status_code == 200, path
            samples = []
            for _ in range(iterations):
                started = time.perf_counter()
                response = client.get(path)
                response.get_data()
                samples.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, path
            results[name] = {
                "path": path,
                "n": iterations,
                "p50_ms": round(statistics.median(samples), 2),
                "p95_ms": round(percentile(samples, 0.95), 2),
                "max_ms": round(max(samples), 2),
            }
        counts = storage.counts()  # type: ignore[attr-defined]
        storage.close()  # type: ignore[attr-defined]

    if args.json:
        print(json.dumps({"counts": counts, "pages": results}, indent=2))
    else:
        print(
            f"demo: {counts['feeds']} feeds, {counts['articles']} articles, {counts['stories']} stories; "
            f"{iterations} renders per page (Flask test client, SQLite, warm)"
        )
        print(f"{'page':<24} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for name, row in results.items():
            print(f"{name:<24} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f} {row['max_ms']:>8.2f}")
    slow = [name for name, row in results.items() if row["p95_ms"] > TARGET_MS]
    if slow:
        print(f"p95 over {TARGET_MS:.0f} ms: {', '.join(slow)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
