"""Scale-out benchmark: synthetic articles stored and clustered through PostgreSQL and the
shared Redis index by 1, 2 and 4 worker processes.

    .venv/bin/python benchmarks/scale_out.py                 # default size, a few minutes
    .venv/bin/python benchmarks/scale_out.py --articles 100000 --workers 1 2 4
    .venv/bin/python benchmarks/scale_out.py --fast          # CI: well under 60 s

Each run starts from an empty database (schema dropped; a dedicated database
``aggregator_bench`` by default, created when absent) and a fresh index name in Redis
database 13. The articles come from the benchmarks' shared synthetic stream
(``benchmarks/synthetic.py``: realistic lengths, ``--length mixed`` by default = 70 %
headline + summary and 30 % 600-word texts; events with same-event rewrites and 15 %
wire copies; topics whose words make unrelated reports collide in LSH as real news
does), at ~1,500 articles an hour by default (1M articles span 28 days, so the 72 h
window holds ~107k). The stream is calibrated for LSH collisions and lengths, not for
the decision rule: its stories are not a clustering-quality figure (the labelled data in
``../shared/eval`` is). They are spread
over feeds; each feed delivers its articles in batches ("fetches"). Workers run the
real code path: claim due feeds (``FOR UPDATE SKIP LOCKED`` + lease), store the batch
(``save_entries`` with the feed's state, one transaction), then cluster what is pending
by the daemon's rule (``ingest.cluster_if_leader``: only the clustering leader, a
session-level advisory lock, runs ``cluster_pending`` with its pass lock, catch-up and
Redis index; the others only store; a worker stops when nothing is due or pending).
No HTTP: fetching scales with the number of workers trivially and would only
measure the network.

Printed per worker count: articles per second (wall clock, all workers), the workers'
CPU time per article (user + system, all workers: less sensitive to other load on the
machine than the wall clock), Redis commands
per article (``INFO commandstats`` calls during the workers' run, commands run inside Lua
scripts included, divided by the articles) and client round trips to Redis per article
(requests the workers' clients sent: a pipeline or a script call is one), the peak
memory (RSS) of each worker, Redis memory per indexed article (INFO used_memory
after minus before, divided by the index entries), database size per article
(pg_database_size after minus before, divided by the articles), and stories found.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import synthetic  # noqa: E402

DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/aggregator_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/13"
START = datetime(2026, 11, 1, tzinfo=UTC)
DENSITY = 1_000_000 / 28  # articles a day by default: tens of thousands of feeds


# --------------------------------------------------------------------------- synthetic articles


@dataclass(frozen=True)
class Item:
    feed: int
    key: str
    title: str
    text: str
    published: datetime


def generate(n: int, feeds: int, seed: int = 7, length: str = "mixed", days: float = 28.0) -> list[Item]:
    """``n`` articles of the shared synthetic stream (``benchmarks/synthetic.py``: events,
    same-event rewrites, 15 % wire copies, topics whose words collide in LSH as real news
    does), its outlets as the feeds."""
    stream = synthetic.Stream(seed, length=length, days=days, outlets=feeds)
    return [
        Item(item.outlet, f"a{item.index}", item.title, item.text, item.published)
        for item in stream.items(n)
    ]


# --------------------------------------------------------------------------- one run


def _entries(batch: list[Item]):  # type: ignore[no-untyped-def]
    import hashlib

    from aggregator.models import ParsedEntry

    return [
        ParsedEntry(
            key=item.key, title=item.title, link=f"https://outlet{item.feed}.example/{item.key}",
            summary=item.text[:300], content_html="", text=item.text, author=None,
            published=item.published, updated=item.published,
            content_hash=hashlib.sha256(item.text.encode()).hexdigest(),
        )
        for item in batch
    ]


def _count_round_trips() -> list[int]:
    """Count the requests this process's Redis clients send (one per command, pipeline or script call)."""
    from redis.connection import AbstractConnection

    sent = [0]
    original = AbstractConnection.send_packed_command

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent[0] += 1
        return original(self, command, check_health)

    AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
    return sent


def _commandstats(client) -> dict[str, int]:  # type: ignore[no-untyped-def]
    return {name: int(stats["calls"]) for name, stats in client.info("commandstats").items()}


def _defer_index_writes() -> None:
    """``--defer-writes``: run each clustering pass's index writes through
    ``CandidateIndex.batch()`` (write-behind: an insert rides with the next query), flushed
    before the pass's transaction commits (at its last ``cluster_state()``), as the wiring
    proposed for ``ingest._cluster_in_transaction`` would."""
    from aggregator import ingest

    original = ingest._cluster_in_transaction

    class FlushingStorage:
        def __init__(self, storage, engine):  # type: ignore[no-untyped-def]
            self._storage, self._engine = storage, engine

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self._storage, name)

        def cluster_state(self):  # type: ignore[no-untyped-def]
            self._engine.clusterer._index.flush()  # inside the transaction, before the commit
            return self._storage.cluster_state()

    def deferred(storage, engine, *rest):  # type: ignore[no-untyped-def]
        with engine.clusterer._index.batch():
            original(FlushingStorage(storage, engine), engine, *rest)

    ingest._cluster_in_transaction = deferred  # type: ignore[assignment]


def worker(
    args: tuple[str, str, str, list[list[list[Item]]], mp.Array, int, bool],
) -> tuple[int, int, float, int, float]:
    """Claim, store, cluster (as the leader) until no feed is due and nothing is pending; returns
    (articles stored, peak RSS in KiB, seconds spent clustering, Redis round trips, CPU seconds)."""
    database_url, index_url, index_name, batches, progress, fetch_batch, defer = args
    sent = _count_round_trips()
    if defer:
        _defer_index_writes()
    from aggregator.cluster import ClusterSettings
    from aggregator.config import Settings
    from aggregator.coordination import index_storage_config
    from aggregator.ingest import ClusterEngine, Leadership, cluster_if_leader
    from aggregator.models import FeedState
    from aggregator.storage import Storage

    settings = Settings(database_url=database_url, feeds_per_tick=fetch_batch)
    storage = Storage(database_url)
    engine = ClusterEngine(ClusterSettings.from_settings(settings), index_storage_config(index_url, index_name))
    leadership = Leadership(storage)  # as the daemon's workers: only the leader clusters
    stored = 0
    clustering = 0.0
    idle = 0
    while idle < 3:
        now = datetime.now(UTC)
        claimed = storage.claim_due_feeds(now, fetch_batch, lease_seconds=600)
        for feed in claimed:
            index = feed.id - 1
            with progress.get_lock():
                step = progress[index]
                progress[index] = step + 1
            batch = batches[index][step] if step < len(batches[index]) else []
            more = step + 1 < len(batches[index])
            state = FeedState(etag=None, last_modified=None, last_fetched_at=now, last_success_at=now,
                              next_check_at=now if more else now + timedelta(days=1), error_count=0,
                              last_error=None)
            with storage.batch():
                storage.save_entries(feed.id, _entries(batch), source=f"Outlet {feed.id}", fetched_at=now)
                storage.save_feed_state(feed.id, state)
            stored += len(batch)
        started = time.perf_counter()
        report = cluster_if_leader(storage, engine, leadership)
        clustering += time.perf_counter() - started
        # done when nothing is due and nothing waits for clustering (a leader that exits
        # first hands over: the next worker's check takes the leadership)
        idle = idle + 1 if not claimed and not report.clustered and not storage.pending_articles(1) else 0
        if not claimed:
            time.sleep(0.05)
    leadership.release()
    engine.close()
    storage.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return stored, usage.ru_maxrss, clustering, sent[0], usage.ru_utime + usage.ru_stime


def run(items: list[Item], feeds: int, workers: int, database_url: str, index_url: str,
        per_fetch: int, defer: bool = False) -> dict[str, float]:
    import redis
    from sqlalchemy import create_engine, text

    from aggregator.cluster.sketch import CandidateIndex, SketchParams
    from aggregator.coordination import index_storage_config
    from aggregator.storage import Storage

    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    storage = Storage(database_url)
    storage.upgrade()
    for n in range(feeds):
        storage.add_feed(f"https://outlet{n}.example/rss", now=START)
    with engine.connect() as conn:
        db_before = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    # Fetch r of a feed brings its articles of the r-th poll period (so arrival follows time, as
    # with real polling); periods are sized so that a fetch brings ``per_fetch`` articles on average.
    period = (items[-1].published - items[0].published) / max(1, len(items) // (feeds * per_fetch))
    rounds = int((items[-1].published - items[0].published) / period) + 1
    batches: list[list[list[Item]]] = [[[] for _ in range(rounds)] for _ in range(feeds)]
    for item in items:
        batches[item.feed][min(rounds - 1, int((item.published - items[0].published) / period))].append(item)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    config = index_storage_config(index_url, name)
    assert config is not None
    client = redis.Redis(**config["redis"])  # type: ignore[arg-type]
    redis_before = client.info("memory")["used_memory"]
    commands_before = _commandstats(client)
    context = mp.get_context("fork")  # the batches and the progress counters are inherited
    progress = context.Array("i", feeds)
    queue = context.Queue()
    job = (database_url, index_url, name, batches, progress, 4, defer)
    processes = [context.Process(target=lambda: queue.put(worker(job))) for _ in range(workers)]
    started = time.perf_counter()
    for process in processes:
        process.start()
    results = [queue.get() for _ in processes]
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
    commands_after = _commandstats(client)
    calls = {k: v - commands_before.get(k, 0) for k, v in commands_after.items()}
    calls["cmdstat_info"] = 0  # this function's own INFO
    index = CandidateIndex(SketchParams(), 0.1, config)
    entries = len(index)
    redis_after = client.info("memory")["used_memory"]
    with engine.connect() as conn:
        db_after = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        articles, duplicates, pending = conn.execute(text(
            "SELECT count(*), count(*) - count(DISTINCT (feed_id, key)), count(*) FILTER (WHERE NOT clustered) "
            "FROM articles")).one()
    counts = storage.counts()
    index.clear()
    index.close()
    client.close()
    storage.close()
    engine.dispose()
    assert articles == len(items) and duplicates == 0 and pending == 0, (articles, duplicates, pending)
    return {
        "workers": workers,
        "articles": articles,
        "seconds": seconds,
        "articles_per_s": articles / seconds,
        "redis_commands_per_article": sum(calls.values()) / max(1, articles),
        "redis_round_trips_per_article": sum(r[3] for r in results) / max(1, articles),
        "worker_cpu_ms_per_article": sum(r[4] for r in results) * 1000 / max(1, articles),
        "redis_top_commands": dict(sorted(calls.items(), key=lambda kv: -kv[1])[:6]),
        "rss_mib_per_worker": max(r[1] for r in results) / 1024,
        "cluster_s_per_worker": max(r[2] for r in results),
        "index_entries": entries,
        "redis_bytes_per_entry": (redis_after - redis_before) / max(1, entries),
        "db_bytes_per_article": (db_after - db_before) / max(1, articles),
        "stories": counts["stories"],
    }


def _ensure_database(url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": target.database}).first():
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=6000)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--per-fetch", type=int, default=5, help="articles a feed delivers per fetch, on average")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--database-url", default=DEFAULT_DB)
    parser.add_argument("--index-url", default=DEFAULT_REDIS)
    parser.add_argument("--length", choices=["headline", "full", "mixed"], default="mixed",
                        help="entry lengths (benchmarks/synthetic.py): mixed = 70 %% headline + summary, 30 %% 600 words")
    parser.add_argument("--days", type=float, default=None,
                        help="time the stream spans (default: ~1,500 articles an hour, 1M in 28 days)")
    parser.add_argument("--fast", action="store_true", help="CI: 400 articles, about 25 s")
    parser.add_argument("--verbose", action="store_true", help="print the most called Redis commands")
    parser.add_argument("--defer-writes", action="store_true",
                        help="index writes ride with the next query (CandidateIndex.batch(), see _defer_index_writes)")
    args = parser.parse_args()
    if args.fast:
        args.articles, args.feeds = 400, 20
    _ensure_database(args.database_url)
    if args.days is None:
        args.days = args.articles / DENSITY
    items = generate(args.articles, args.feeds, length=args.length, days=args.days)
    window = min(len(items), int(len(items) * 72 / (24 * args.days)))
    print(f"{len(items)} synthetic articles ({args.length}, over {args.days:.3g} days: ~{window} in a 72 h window) "
          f"over {args.feeds} feeds, ~{args.per_fetch} per fetch; "
          f"PostgreSQL {args.database_url.split('@')[-1]}, Redis {args.index_url}"
          + ("; index writes deferred to the next query" if args.defer_writes else ""))
    print("| workers | articles | seconds | articles/s | worker CPU ms/article | Redis cmds/article "
          "| Redis round trips/article | RSS MiB/worker | cluster s/worker | index entries | Redis B/entry | DB B/article | stories |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for workers in args.workers:
        r = run(items, args.feeds, workers, args.database_url, args.index_url, args.per_fetch, args.defer_writes)
        print(f"| {r['workers']} | {r['articles']} | {r['seconds']:.1f} | {r['articles_per_s']:.0f} | "
              f"{r['worker_cpu_ms_per_article']:.1f} | {r['redis_commands_per_article']:.1f} | {r['redis_round_trips_per_article']:.1f} | "
              f"{r['rss_mib_per_worker']:.0f} | {r['cluster_s_per_worker']:.1f} | {r['index_entries']} | "
              f"{r['redis_bytes_per_entry']:.0f} | {r['db_bytes_per_article']:.0f} | {r['stories']} |", flush=True)
        if args.verbose:
            print(f"  top Redis commands: {r['redis_top_commands']}", flush=True)


if __name__ == "__main__":
    main()
