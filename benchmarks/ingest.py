"""End-to-end ingest throughput: feed documents in, articles stored, signed and clustered.

The input is synthetic RSS (``benchmarks/synthetic.py``: events, same-event rewrites,
wire copies) written as files of ``--per-feed`` entries. Each case runs the daemon's own
pipeline on a fresh SQLite database: ``ingest.update_feeds`` (fetch, parse, normalise,
store, one transaction per feed) then ``ingest.cluster_pending`` (sign, cluster, record
assignments), once with ``file://`` feeds and once with the same documents served by a
local HTTP server on 127.0.0.1 (``python -m http.server`` in a subprocess pinned to the
other core). The benchmark process is pinned to one core, so articles/second is one core.

It also times (CPU time) the bare cost of the parts on the same input, ``parse_feed`` plus the
clusterer's ``prepare`` and ``signature`` (features + MinHash) of every entry, with no
storage and no index, and prints the ratio of the whole pipeline's CPU time to it (in HTTP mode the server's
CPU is another process's and is not counted).

Cost per article grows with the number of articles in the clustering window (LSH
candidates per query are a share of it), so the figures depend on ``--headline`` and
``--full``: every case starts from an empty database and ends with all its articles in
the window ("in window"). ``art/CPU s`` divides by the process's CPU time, the fair
figure on a shared machine (the wall-clock ``art/s`` includes time other processes took
from the pinned core).

Targets (issue 8): >= 2,000 articles/s for headline-length entries, >= 1,000 for
600-word full-text entries, pipeline / bare parts < 1.5.

    python benchmarks/ingest.py            # 20,000 headline + 5,000 full-text articles
    python benchmarks/ingest.py --fast     # CI: 2,000 + 500, a few seconds
    python benchmarks/ingest.py --profile  # also write a pyinstrument profile per case (if installed)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402

from aggregator import ingest, parse  # noqa: E402
from aggregator.cluster import Clusterer, ClusterSettings, Document  # noqa: E402
from aggregator.config import Settings  # noqa: E402
from aggregator.storage import open_storage  # noqa: E402

TARGETS = {"headline": 2000.0, "full": 1000.0}
MAX_RATIO = 1.5
NOW = datetime(2024, 2, 1, tzinfo=UTC)


def pin(core: int | None) -> str:
    """Pin this process (and the threads it starts later) to one core."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[core % len(cores)]
    os.sched_setaffinity(0, {chosen})
    return f"pinned to core {chosen} of {len(cores)}"


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        if hasattr(os, "sched_setaffinity"):
            others = sorted(os.sched_getaffinity(0) ^ set(range(os.cpu_count() or 1))) or None
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, set(others) if others else set(range(os.cpu_count() or 1)))
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def pipeline(urls: list[str], workdir: Path, name: str, profile: bool) -> dict[str, float]:
    """The daemon's pipeline over every feed once, on a fresh database."""
    database = workdir / f"{name}.db"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        allow_private=True,
        allow_file_urls=True,
        fetch_workers=2,
        max_entries_per_feed=1000,
    )
    storage = open_storage(settings.database_url)
    feeds = [storage.add_feed(url, now=NOW) for url in urls]
    engine = ingest.ClusterEngine(ClusterSettings.from_settings(settings))
    profiler = None
    if profile:
        with contextlib.suppress(ImportError):
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0005)
            profiler.start()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    reports = ingest.update_feeds(storage, feeds, settings)
    wall1 = time.perf_counter()
    report = ingest.cluster_pending(storage, engine)
    cpu2, wall2 = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.stop()
        out = Path(tempfile.gettempdir()) / f"profile-ingest-{name}.html"
        out.write_text(profiler.output_html())
        print(f"  profile: {out}", file=sys.stderr)
    errors = [r.error for r in reports if r.status == "error"]
    if errors:
        raise SystemExit(f"{name}: {len(errors)} feeds failed, first: {errors[0]}")
    stored = sum(r.new for r in reports)
    counts = storage.counts()
    storage.close()
    return {
        "articles": stored,
        "clustered": report.clustered,
        "stories": counts["stories"],
        "fetch_parse_store_s": wall1 - wall0,
        "cluster_s": wall2 - wall1,
        "wall_s": wall2 - wall0,
        "cpu_s": cpu2 - cpu0,
        "articles_per_s": stored / (wall2 - wall0),
        "articles_per_cpu_s": stored / (cpu2 - cpu0),
        "resident": len(engine.clusterer),
    }


def bare_parts(docs: list[tuple[str, bytes]], urls: list[str]) -> dict[str, float]:
    """parse_feed + prepare/signature of every entry: the work no pipeline can avoid."""
    clusterer = Clusterer(ClusterSettings())
    started = time.process_time()
    parsed = [parse.parse_feed(body, url=url, now=NOW) for (_, body), url in zip(docs, urls, strict=True)]
    parse_s = time.process_time() - started
    started = time.process_time()
    n = 0
    for feed in parsed:
        for entry in feed.entries:
            n += 1
            prepared = clusterer.prepare(
                Document(n, entry.title, entry.text or entry.summary, entry.published)
            )
            clusterer.signature(prepared)
    sign_s = time.process_time() - started
    return {
        "articles": n,
        "parse_s": parse_s,
        "sign_s": sign_s,
        "bare_s": parse_s + sign_s,
        "parse_us": parse_s / n * 1e6,
        "sign_us": sign_s / n * 1e6,
    }


def run_case(length: str, n: int, per_feed: int, workdir: Path, profile: bool) -> dict[str, object]:
    root = workdir / length
    root.mkdir()
    docs = synthetic.feed_documents(n, length=length, per_feed=per_feed)
    for name, body in docs:
        (root / f"{name}.xml").write_bytes(body)
    file_urls = [(root / f"{name}.xml").as_uri() for name, _ in docs]
    result: dict[str, object] = {
        "length": length,
        "entries": n,
        "feeds": len(docs),
        "bytes_per_entry": sum(len(b) for _, b in docs) // n,
    }
    result["bare"] = bare = bare_parts(docs, file_urls)
    result["file"] = pipeline(file_urls, workdir, f"{length}-file", profile)
    with http_server(root) as base:
        http_urls = [f"{base}/{name}.xml" for name, _ in docs]
        result["http"] = pipeline(http_urls, workdir, f"{length}-http", False)
    for mode in ("file", "http"):
        run = result[mode]
        assert isinstance(run, dict)
        run["ratio_to_bare"] = run["cpu_s"] / bare["bare_s"]  # CPU time both: fair on a shared machine
    result["load"] = load()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="small input (CI)")
    parser.add_argument("--headline", type=int, default=20_000, help="headline-length articles")
    parser.add_argument("--full", type=int, default=5_000, help="600-word full-text articles")
    parser.add_argument("--per-feed", type=int, default=100, help="entries per feed document")
    parser.add_argument("--core", type=int, default=0, help="core to pin to (-1: do not pin)")
    parser.add_argument("--profile", action="store_true", help="pyinstrument HTML profile of the file runs")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.fast:
        args.headline, args.full = 2_000, 500
    pinned = pin(None if args.core < 0 else args.core)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for length, n in (("headline", args.headline), ("full", args.full)):
            if n > 0:
                cases.append(run_case(length, n, args.per_feed, Path(tmp), args.profile))
    missed = []
    if args.json:
        print(json.dumps({"pinned": pinned, "cases": cases}, indent=2))
    else:
        print(f"end-to-end ingest, SQLite, {pinned}; load average at the end of each case shown")
        print(
            f"{'entries':<10}{'n':>7} {'mode':<5} {'art/s':>7} {'art/CPU s':>9} {'target':>7} "
            f"{'fetch+parse+store s':>20} {'cluster s':>10} {'ratio':>6} {'in window':>9} {'load':>16}"
        )
        for case in cases:
            bare = case["bare"]
            for mode in ("file", "http"):
                run = case[mode]
                target = TARGETS[str(case["length"])]
                ok = run["articles_per_s"] >= target and run["ratio_to_bare"] < MAX_RATIO
                if not ok:
                    missed.append(f"{case['length']}/{mode}")
                print(
                    f"{case['length']:<10}{case['entries']:>7} {mode:<5} {run['articles_per_s']:>7.0f} "
                    f"{run['articles_per_cpu_s']:>9.0f} {target:>7.0f} {run['fetch_parse_store_s']:>20.2f} "
                    f"{run['cluster_s']:>10.2f} {run['ratio_to_bare']:>6.2f} {run['resident']:>9,} {case['load']:>16}"
                )
            print(
                f"{'':<10}{'':>7} bare  {bare['articles'] / bare['bare_s']:>7.0f} {'':>9}   parse {bare['parse_us']:.0f} us"
                f" + prepare/sign {bare['sign_us']:.0f} us per entry ({case['bytes_per_entry']} bytes/entry)"
            )
        print(
            f"targets: >= {TARGETS['headline']:.0f} art/s headline, >= {TARGETS['full']:.0f} full text, "
            f"ratio (pipeline / bare parse+sign) < {MAX_RATIO}; missed: {', '.join(missed) or 'none'}"
        )
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
