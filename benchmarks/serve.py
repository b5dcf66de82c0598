"""Serving throughput under a production WSGI server, while a worker ingests.

Builds a SQLite database (the bundled demo, one story of 60 articles so that its feed
has a full 50-entry page, and ``--background`` synthetic headline articles), then starts

* the production web server on ``aggregator.wsgi:make_app`` (the production entry point,
  settings from ``AGGREGATOR_*`` variables), on a 127.0.0.1 port: ``--server granian`` (the
  default, the ``server`` extra; docker-compose.yml's command line): ``--workers`` processes
  (default: one per core) with ``--threads`` blocking threads each running the app, HTTP/1.1;
  or ``--server gunicorn`` (``pip install gunicorn``): ``--workers`` processes of the
  ``--worker-class`` (default ``gthread``, which keeps connections alive) with ``--threads``
  threads each;
* one ingest worker process that stores and clusters 20 new synthetic articles every
  half second (``Storage.save_entries`` + ``ingest.cluster_pending``) the whole time;
  measuring starts once it has stored its first batch (its clustering index takes
  ~15 s to load),

and drives them with ``wrk`` (``apt-get install wrk``) at ``--connections`` connections
for ``--duration`` seconds per case. First with the render cache and the river's
micro-cache off (``render_cache_mb = 0``, ``river_cache_seconds = 0``: every request
renders, the cost of a new validator):

* ``story feed 200 miss``: ``/stories/<id>/feed.atom`` of the 60-article story;
* ``river page miss``: ``/`` (HTML, 50 stories);

then, restarted with both on (``--cache-mb``, ``--river-cache-seconds``: the production
setup):

* ``story feed 200``: the story feed without a validator: full 200s, the body from the
  render cache (target >= 1,500 requests/s);
* ``story feed 304``: the same with ``If-None-Match`` (target >= 3,000 requests/s);
* ``river feed 304``: ``/feed.atom`` with ``If-None-Match`` (answers 200 when the ingest
  worker changed the river in between: counted);
* ``river page``, ``river page 304``: ``/`` without and with ``If-None-Match`` (the
  same: 200 once the river or the minute changed);

(the river's answers come from each process's micro-cache, refreshed by Flask once a
``--river-cache-seconds``; ``bytes`` is the size of a 200's body),

target p99 latency <= 50 ms each. With each case: the load average, and the CPU time
the web processes spent per request (the figure that other work on the machine changes
least; requests/s and latency are shared with it, with wrk and with the ingest worker).

    python benchmarks/serve.py             # granian, wrk, 10 s per case, 100 connections
    python benchmarks/serve.py --server gunicorn
    python benchmarks/serve.py --fast      # CI: no wrk needed, a few seconds with a Python client
    python benchmarks/serve.py --only "story feed 304" --no-ingest
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
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


def start_web(
    database: str, port: int, args: argparse.Namespace, cache_mb: int, river_s: float
) -> subprocess.Popen[bytes]:
    """``args.server`` (granian or gunicorn) on ``aggregator.wsgi:make_app`` (the production
    entry point), settings from the environment as in production."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env.update(
        AGGREGATOR_DATABASE_URL=database,
        AGGREGATOR_BASE_URL="http://127.0.0.1:8080",
        AGGREGATOR_RENDER_CACHE_MB=str(cache_mb),
        AGGREGATOR_RIVER_CACHE_SECONDS=str(river_s),
        AGGREGATOR_LOG_LEVEL="WARNING",
    )
    if args.server == "granian":
        from aggregator.wsgi import granian_command

        # a worker still loading the app misses the SIGTERM of a stop: killed after 5 s
        command = granian_command("127.0.0.1", port, workers=args.workers, threads=args.threads, kill_timeout=5)
        return subprocess.Popen(command, env=env)
    command = [
        sys.executable, "-m", "gunicorn",
        "--workers", str(args.workers),
        "--worker-class", args.worker_class,
        "--threads", str(args.threads),
        "--bind", f"127.0.0.1:{port}",
        "--backlog", "2048",
        "--keep-alive", "30",
        "--log-level", "warning",
    ]  # fmt: skip
    if Path("/dev/shm").is_dir():  # the workers' heartbeat file: in memory (gunicorn's advice)
        command += ["--worker-tmp-dir", "/dev/shm"]
    command.append("aggregator.wsgi:make_app()")
    return subprocess.Popen(command, env=env)


def descendants(pid: int) -> list[int]:
    """``pid`` and all its live descendants (the server's worker processes), whichever of
    their threads started them."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    queue += [int(child) for child in (task / "children").read_text().split()]
    return found


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> float:
    """User + system CPU so far of these processes and their descendants (the server's worker
    processes; a process's figure covers all its threads, granian's Rust runtime included)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid for proc in procs for pid in descendants(proc.pid)]
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM, SIGKILL after 10 s; then any worker process the server left behind."""
    workers = [pid for proc in procs for pid in descendants(proc.pid) if pid != proc.pid]
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in workers:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    procs.clear()


def wait_ready(port: int) -> None:
    for _ in range(400):
        with contextlib.suppress(OSError):
            if get(port, "/healthz")[0] == 200:
                return
        time.sleep(0.05)
    raise SystemExit("the web server did not start")


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
        Path(counter + ".tmp").write_text(str(done))
        Path(counter + ".tmp").replace(counter)  # atomic: the parent reads it any time
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
    parser.add_argument("--server", choices=["granian", "gunicorn"], default="granian",
                        help="the WSGI server (granian: the server extra; gunicorn: pip install gunicorn)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--worker-class", default="gthread", help="gunicorn worker class")
    parser.add_argument("--threads", type=int, default=4,
                        help="Python threads per worker (granian --blocking-threads, gunicorn gthread --threads)")
    parser.add_argument("--cache-mb", type=int, default=64, help="render_cache_mb of the cached cases")
    parser.add_argument(
        "--river-cache-seconds", type=float, default=1.0, help="river_cache_seconds of the cached cases"
    )
    parser.add_argument("--background", type=int, default=5000, help="synthetic articles in the database")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--no-ingest", action="store_true", help="no background ingest worker")
    parser.add_argument("--only", nargs="+", metavar="CASE", help="run only these cases (names as printed)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_ingest(args.child[1], args.child[2])
        return 0
    if importlib.util.find_spec(args.server) is None:
        raise SystemExit(f"{args.server} is not installed (granian: pip install '.[server]'; pip install gunicorn)")
    use_wrk = not args.fast and shutil.which("wrk") is not None
    if not args.fast and not use_wrk:
        raise SystemExit("wrk is not installed (apt-get install wrk); --fast runs without it")
    if args.fast:
        args.background, args.duration, args.connections = 1000, 2, 8
    web: list[subprocess.Popen[bytes]] = []
    ingest: list[subprocess.Popen[bytes]] = []
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        database, story_id = build_database(Path(tmp) / "serve.db", args.background)
        port = free_port()
        story = f"/stories/{story_id}/feed.atom"
        try:
            counter = Path(tmp) / "ingested"
            if not args.no_ingest:
                ingest.append(
                    subprocess.Popen([sys.executable, __file__, "--child", "ingest", database, str(counter)])
                )
                # Its first batch waits for the clustering index to load (~15 s): measure
                # only once it is ingesting for real.
                for _ in range(1200):
                    if counter.exists() or ingest[0].poll() is not None:
                        break
                    time.sleep(0.1)
                if not counter.exists():
                    raise SystemExit("the background ingest worker did not start")

            def run(name: str, path: str, extra: dict[str, str]) -> None:
                if args.only and name not in args.only:
                    return
                for _ in range(3):  # warm every process
                    get(port, path, extra)
                size = len(get(port, path)[2])
                cpu = cpu_seconds(web)
                if use_wrk:
                    row = wrk(port, path, extra, args.connections, args.duration, args.wrk_threads)
                else:
                    row = python_load(port, path, extra, args.connections, args.duration)
                # CPU the web processes spent per request: the figure that other load on the
                # machine does not change (requests/s and latency are shared with it).
                row["cpu_ms_per_request"] = (cpu_seconds(web) - cpu) * 1000 / max(1, int(row["requests"]))  # type: ignore[call-overload]
                row["load"] = load()
                row["bytes"] = size
                results[name] = row
            ingested_before = int(counter.read_text()) if counter.exists() else 0  # written atomically
            started = time.perf_counter()
            # 1. No render cache: every request renders the page (the cost of a new validator).
            web.append(start_web(database, port, args, 0, 0.0))
            wait_ready(port)
            status, headers, body = get(port, story)
            assert status == 200 and body.count(b"<entry>") == 50, (status, body.count(b"<entry>"))
            run("story feed 200 miss", story, {})
            run("river page miss", "/", {})
            stop(web)
            # 2. The production setup: render cache on.
            web.append(start_web(database, port, args, args.cache_mb, args.river_cache_seconds))
            wait_ready(port)
            status, headers, body = get(port, story)
            assert status == 200 and body.count(b"<entry>") == 50, (status, body.count(b"<entry>"))
            story_etag = headers["etag"]
            assert get(port, story, {"If-None-Match": story_etag})[0] == 304
            river_etag = get(port, "/feed.atom")[1]["etag"]
            page_etag = get(port, "/")[1].get("etag", '"none"')
            run("story feed 200", story, {})
            run("story feed 304", story, {"If-None-Match": story_etag})
            run("river feed 304", "/feed.atom", {"If-None-Match": river_etag})
            run("river page", "/", {})
            run("river page 304", "/", {"If-None-Match": page_etag})
            ingested = (int(counter.read_text()) if counter.exists() else 0) - ingested_before
            ingest_rate = ingested / (time.perf_counter() - started)
        finally:
            stop(web)
            stop(ingest)
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
        if args.server == "granian":
            server = f"granian wsgi, {args.workers} workers x {args.threads} blocking threads"
        else:
            server = f"gunicorn {args.worker_class}, {args.workers} workers"
            if args.worker_class == "gthread":
                server += f" x {args.threads} threads"
        print(
            f"{server} on 127.0.0.1; {tool}; "
            f"background ingest {ingest_rate:.0f} articles/s{'' if not args.no_ingest else ' (off)'}"
        )
        print("'miss': render cache and river micro-cache off, every request renders; the others: "
              f"render_cache_mb={args.cache_mb} (a 200 is served from the cache until the story changes), "
              f"river_cache_seconds={args.river_cache_seconds:g}")
        print(
            f"{'case':<20} {'req/s':>8} {'target':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU ms/req':>10} "
            f"{'requests':>9} {'bytes':>8} {'load':>16}"
        )
        for name, row in results.items():
            target = TARGETS.get(name)
            print(
                f"{name:<20} {row['requests_per_s']:>8.0f} {target or 0:>7.0f} {row['p50_ms']:>7.1f} "
                f"{row['p99_ms']:>7.1f} {row['cpu_ms_per_request']:>10.3f} {row['requests']:>9} {row['bytes']:>8} {row['load']:>16}"
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
