"""Serving throughput under a production WSGI server, while a worker ingests.

Builds a SQLite database (the bundled demo, one story of 60 articles so that its feed
has a full 50-entry page, and ``--background`` synthetic headline articles), then starts

* ``--workers`` web processes (default: one per core), each the app of
  ``aggregator.web.create_app`` under waitress (the daemon's server) with
  ``--threads`` threads, all listening on one 127.0.0.1 port (``SO_REUSEPORT``: the
  kernel spreads connections; waitress has no prefork mode of its own);
* one ingest worker process that stores and clusters 20 new synthetic articles every
  half second (``Storage.save_entries`` + ``ingest.cluster_pending``) the whole time,

and drives them with ``wrk`` (``apt-get install wrk``) at ``--connections`` connections
for ``--duration`` seconds per case:

* ``story feed 200``: ``/stories/<id>/feed.atom`` of the 60-article story, no validator:
  every request renders the 50-entry page (target >= 1,500 requests/s);
* ``story feed 304``: the same with ``If-None-Match`` (target >= 3,000 requests/s);
* ``river feed 304``: ``/feed.atom`` with ``If-None-Match`` (answers 200 when the ingest
  worker changed the river in between: counted);
* ``river page``: ``/`` (HTML, 50 stories);

target p99 latency <= 50 ms each. The load average is printed with each case.

    python benchmarks/serve.py             # wrk, 10 s per case, 100 connections
    python benchmarks/serve.py --fast      # CI: no wrk needed, a few seconds with a Python client
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import synthetic  # noqa: E402

TARGETS = {"story feed 200": 1500.0, "story feed 304": 3000.0}
MAX_P99_MS = 50.0


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --------------------------------------------------------------------------- children


def child_web(database: str, port: int, threads: int) -> None:
    import logging

    from waitress.server import create_server

    from aggregator.config import Settings
    from aggregator.storage import open_storage
    from aggregator.web import create_app

    logging.getLogger("waitress").setLevel(logging.ERROR)  # "Task queue depth" under load is expected
    settings = Settings(database_url=database, base_url="http://127.0.0.1:8080", web_threads=threads)
    app = create_app(settings, open_storage(database))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    server = create_server(app, sockets=[sock], threads=threads, connection_limit=1000, backlog=2048)
    signal.signal(signal.SIGTERM, lambda *_: server.close())
    with contextlib.suppress(Exception):
        server.run()


def child_ingest(database: str, counter: str) -> None:
    """Store and cluster 20 synthetic articles every half second until terminated."""
    from aggregator import ingest
    from aggregator.cluster import ClusterSettings
    from aggregator.models import ParsedEntry
    from aggregator.storage import open_storage

    storage = open_storage(database)
    engine = ingest.ClusterEngine(ClusterSettings())
    stream = synthetic.Stream(7, length="headline", days=1).items(10**7)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    done = 0
    base = datetime.now(UTC) - timedelta(hours=1)
    while not stop.is_set():
        batch = [next(stream) for _ in range(20)]
        entries = [
            ParsedEntry(
                key=f"bg-{item.index}",
                title=item.title,
                link=f"https://bg.example/{item.index}",
                summary=item.summary,
                content_html=f"<p>{item.summary}</p>",
                text=item.summary,
                author=None,
                published=base + timedelta(seconds=done),
                updated=base + timedelta(seconds=done),
                content_hash=f"{item.index:064d}",
            )
            for item in batch
        ]
        storage.save_entries(None, entries, source="Background Wire", fetched_at=datetime.now(UTC))
        ingest.cluster_pending(storage, engine)
        done += len(entries)
        Path(counter).write_text(str(done))
        stop.wait(0.5)


# --------------------------------------------------------------------------- setup


def build_database(path: Path, background: int) -> tuple[str, int]:
    """Demo + a 60-article story + ``background`` synthetic articles; returns (url, story id)."""
    from aggregator.cli import demo_dir, import_opml, make_engine
    from aggregator.config import Settings
    from aggregator.ingest import cluster_pending, run_pass
    from aggregator.models import ParsedEntry
    from aggregator.storage import open_storage

    url = f"sqlite:///{path}"
    settings = Settings(database_url=url, allow_private=True, allow_file_urls=True)
    storage = open_storage(url)
    import_opml(storage, demo_dir() / "demo.opml")
    engine = make_engine(settings)
    run_pass(storage, engine, settings, all_feeds=True)
    now = datetime.now(UTC)
    items = list(synthetic.Stream(3, length="headline", days=2).items(background))
    body = " ".join(
        f"Paragraph {i} of the harbour strike report, with the negotiators' latest offer." for i in range(8)
    )
    big = [
        ParsedEntry(
            key=f"wire-{i}",
            title="Harbour strike enters third week as talks stall",
            link=f"https://outlet{i}.example/strike",
            summary=body[:300],
            content_html="".join(f"<p>{body}</p>" for _ in range(3)),
            text=body,
            author=f"Reporter {i}",
            published=now - timedelta(minutes=120 - i),
            updated=now - timedelta(minutes=120 - i),
            content_hash=f"{i:064d}",
        )
        for i in range(60)
    ]
    for i, entry in enumerate(big):
        storage.save_entries(None, [entry], source=f"Outlet {i}", fetched_at=now)
    for start in range(0, len(items), 500):
        entries = [
            ParsedEntry(
                key=f"syn-{item.index}",
                title=item.title,
                link=f"https://syn.example/{item.index}",
                summary=item.summary,
                content_html=f"<p>{item.summary}</p>",
                text=item.summary,
                author=None,
                published=now - timedelta(hours=47) + (item.published - synthetic.EPOCH),
                updated=now - timedelta(hours=47) + (item.published - synthetic.EPOCH),
                content_hash=f"{item.index:064d}",
            )
            for item in items[start : start + 500]
        ]
        storage.save_entries(None, entries, source=f"Outlet {start // 500}", fetched_at=now)
    cluster_pending(storage, engine)
    from aggregator.storage.facade import StoryFilter

    top = storage.find_stories(StoryFilter(), limit=1, order="sources").stories[0]
    assert top.article_count >= 50, top
    storage.close()
    return url, top.id


# --------------------------------------------------------------------------- load


def get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


# Counts the answers by status (a river 304 turns into a 200 whenever the ingest worker
# changed the river in between).
STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) c200 = 0; c304 = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then c200 = c200 + 1 elseif status == 304 then c304 = c304 + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, b, o = 0, 0, 0
  for _, t in ipairs(threads) do a = a + t:get("c200"); b = b + t:get("c304"); o = o + t:get("other") end
  io.write(string.format("STATUS %d %d %d\\n", a, b, o))
end
"""


def wrk(
    port: int, path: str, headers: dict[str, str], connections: int, duration: int, threads: int
) -> dict[str, object]:
    script = Path(tempfile.gettempdir()) / "aggregator-serve-status.lua"
    script.write_text(STATUS_LUA)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(script),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        command + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True
    ).stdout

    def ms(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    p = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    counted = re.search(r"STATUS (\d+) (\d+) (\d+)", out)
    statuses = {}
    if counted:
        statuses = {
            k: int(v) for k, v in zip(("200", "304", "other"), counted.groups(), strict=True) if int(v)
        }
    return {
        "statuses": statuses,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": ms(p["50"]),
        "p99_ms": ms(p["99"]),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def python_load(
    port: int, path: str, headers: dict[str, str], connections: int, duration: float
) -> dict[str, object]:
    """A small keep-alive load generator for fast mode (no wrk needed)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.perf_counter() + duration

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        codes: dict[int, int] = {}
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            codes[response.status] = codes.get(response.status, 0) + 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for code, count in codes.items():
                statuses[code] = statuses.get(code, 0) + count

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "requests": len(latencies),
        "statuses": statuses,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fast", action="store_true", help="Python load generator, 2 s per case (CI)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per case")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="web processes")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads per web process")
    parser.add_argument("--background", type=int, default=5000, help="synthetic articles in the database")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--no-ingest", action="store_true", help="no background ingest worker")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child[0] == "web":
            child_web(args.child[1], int(args.child[2]), int(args.child[3]))
        else:
            child_ingest(args.child[1], args.child[2])
        return 0
    use_wrk = not args.fast and shutil.which("wrk") is not None
    if not args.fast and not use_wrk:
        raise SystemExit("wrk is not installed (apt-get install wrk); --fast runs without it")
    if args.fast:
        args.background, args.duration, args.connections = 1000, 2, 8
    procs: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        database, story_id = build_database(Path(tmp) / "serve.db", args.background)
        port = free_port()
        try:
            for _ in range(args.workers):
                procs.append(
                    subprocess.Popen(
                        [sys.executable, __file__, "--child", "web", database, str(port), str(args.threads)]
                    )
                )
            counter = Path(tmp) / "ingested"
            if not args.no_ingest:
                procs.append(
                    subprocess.Popen([sys.executable, __file__, "--child", "ingest", database, str(counter)])
                )
            for _ in range(200):
                with contextlib.suppress(OSError):
                    if get(port, "/healthz")[0] == 200:
                        break
                time.sleep(0.05)
            story = f"/stories/{story_id}/feed.atom"
            status, headers, body = get(port, story)
            assert status == 200 and body.count(b"<entry>") == 50, (status, body.count(b"<entry>"))
            story_etag = headers["etag"]
            assert get(port, story, {"If-None-Match": story_etag})[0] == 304
            river_etag = get(port, "/feed.atom")[1]["etag"]
            cases = {
                "story feed 200": (story, {}),
                "story feed 304": (story, {"If-None-Match": story_etag}),
                "river feed 304": ("/feed.atom", {"If-None-Match": river_etag}),
                "river page": ("/", {}),
            }
            ingested_before = int(counter.read_text()) if counter.exists() else 0
            started = time.perf_counter()
            for name, (path, extra) in cases.items():
                for _ in range(3):  # warm every process
                    get(port, path, extra)
                if use_wrk:
                    row = wrk(port, path, extra, args.connections, args.duration, args.wrk_threads)
                else:
                    row = python_load(port, path, extra, args.connections, args.duration)
                row["load"] = load()
                results[name] = row
            ingested = (int(counter.read_text()) if counter.exists() else 0) - ingested_before
            ingest_rate = ingested / (time.perf_counter() - started)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    missed = []
    for name, row in results.items():
        target = TARGETS.get(name)
        if (target is not None and row["requests_per_s"] < target) or row["p99_ms"] > MAX_P99_MS:  # type: ignore[operator]
            missed.append(name)
    if args.json:
        print(
            json.dumps(
                {"results": results, "background_ingest_per_s": ingest_rate, "missed": missed}, indent=2
            )
        )
    else:
        tool = (
            f"wrk -t{args.wrk_threads} -c{args.connections} -d{args.duration}s"
            if use_wrk
            else f"Python client, {args.connections} connections, {args.duration} s (fast mode: not the target setup)"
        )
        print(
            f"waitress, {args.workers} processes x {args.threads} threads on 127.0.0.1; {tool}; "
            f"background ingest {ingest_rate:.0f} articles/s"
        )
        print(
            f"{'case':<16} {'req/s':>8} {'target':>7} {'p50 ms':>7} {'p99 ms':>7} {'requests':>9} {'load':>16}"
        )
        for name, row in results.items():
            target = TARGETS.get(name)
            print(
                f"{name:<16} {row['requests_per_s']:>8.0f} {target or 0:>7.0f} {row['p50_ms']:>7.1f} "
                f"{row['p99_ms']:>7.1f} {row['requests']:>9} {row['load']:>16}"
                + (f"  non-2xx/3xx {row['non_2xx_3xx']}" if row.get("non_2xx_3xx") else "")
                + (f"  {row['statuses']}" if "statuses" in row else "")
            )
        print(
            f"targets: story feed 200 >= 1500 req/s, 304 >= 3000 req/s, p99 <= {MAX_P99_MS:.0f} ms; "
            f"missed: {', '.join(missed) or 'none'}"
        )
    return 1 if (args.check and missed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
