"""Peak memory and time of one fetch + parse + store of hostile feeds.

Each case runs in a fresh subprocess (``--child``) so that its peak RSS
(``ru_maxrss``) is its own: the process imports aggregator, opens a SQLite
database, records its RSS, then runs ``ingest.update_feed`` once against a
local FeedServer and reports the growth. Cases:

* ``tiny``: a two-entry feed (the baseline);
* ``entries``: a feed of 100,000 entries (about 9 MiB), capped by
  ``max_entries_per_feed``;
* ``gzip-bomb``: an endless gzip stream of zeros (1 MiB compressed is 1 GiB),
  cut at ``max_feed_bytes``;
* ``oversized``: an endless plain body, cut at ``max_feed_bytes``.

Run: ``python benchmarks/fetch_memory.py [--fast]`` (``--fast`` is the same:
every case takes about a second). Prints one JSON object per case.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MiB = 1024 * 1024
CASES = ("tiny", "entries", "gzip-bomb", "oversized")


def rss_feed(count: int) -> bytes:
    items = b"".join(
        b"<item><guid>id-%d</guid><title>Entry %d</title><link>https://o.example/%d</link></item>" % (i, i, i)
        for i in range(count)
    )
    return (
        b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Big</title>'
        + items
        + b"</channel></rss>"
    )


def gzip_zeros(total: int) -> Callable[[], Iterator[bytes]]:
    """A gzip stream of ``total`` zero bytes, compressed as it is sent."""

    def chunks() -> Iterator[bytes]:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        block = b"\0" * MiB
        for _ in range(total // MiB):
            data = compressor.compress(block)
            if data:
                yield data
        yield compressor.flush()

    return chunks


def endless(chunk: bytes = b"<rss>" + b"x" * 65531) -> Callable[[], Iterator[bytes]]:
    def chunks() -> Iterator[bytes]:
        for _ in range(100_000):
            yield chunk

    return chunks


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(url: str, database: str, max_feed_bytes: int) -> dict[str, object]:
    """One update of the feed at ``url`` in this process; its memory growth."""
    from datetime import UTC, datetime

    from aggregator.config import Settings
    from aggregator.ingest import update_feed
    from aggregator.storage import open_storage

    settings = Settings(database_url=database, allow_private=True, fetch_timeout=20.0, max_feed_bytes=max_feed_bytes)
    storage = open_storage(settings.database_url)
    feed = storage.add_feed(url, now=datetime.now(UTC))
    before = peak_mib()
    started = time.perf_counter()
    report = update_feed(storage, feed, settings)
    seconds = time.perf_counter() - started
    after = peak_mib()
    storage.close()
    return {
        "status": report.status,
        "new": report.new,
        "error": report.error,
        "seconds": round(seconds, 3),
        "peak_rss_mib": round(after, 1),
        "growth_mib": round(after - before, 1),
    }


def run_case(url: str, workdir: str, max_feed_bytes: int = 10 * MiB) -> dict[str, object]:
    """Run ``child`` for ``url`` in a fresh interpreter and return its report."""
    database = f"sqlite:///{Path(workdir) / f'memory-{time.monotonic_ns()}.db'}"
    result = subprocess.run(
        [sys.executable, __file__, "--child", url, "--database", database, "--max-feed-bytes", str(max_feed_bytes)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    report: dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def serve(server: object) -> None:
    from tests.feedserver import FeedServer, Response

    assert isinstance(server, FeedServer)
    server.route("/tiny.xml", Response(body=rss_feed(2)))
    server.route("/entries.xml", Response(body=rss_feed(100_000)))
    server.route("/gzip-bomb.xml", Response(body=gzip_zeros(1024 * MiB), headers={"Content-Encoding": "gzip"}))
    server.route("/oversized.xml", Response(body=endless()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="CI mode (the same cases)")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--max-feed-bytes", type=int, default=10 * MiB, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.database, args.max_feed_bytes)))
        return 0

    from tests.feedserver import FeedServer

    with FeedServer() as server, tempfile.TemporaryDirectory() as workdir:
        serve(server)
        for case in CASES:
            report = run_case(server.url(f"/{case}.xml"), workdir)
            print(json.dumps({"case": case, **report}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
