"""The clustering leader on the real PostgreSQL: one worker at a time clusters (a
session-level advisory lock), the others only fetch and store, and when the leader's
connection or process goes the next worker to tick takes over and clusters what waits."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from aggregator import metrics
from aggregator.cli import subscribe_demo
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, Leadership, cluster_if_leader
from aggregator.scheduler import Daemon
from aggregator.storage import Storage
from aggregator.storage.coordination import LEADER_LOCK_KEY
from tests.test_corpus import assert_consistent

_CLOSE: list[Callable[[], None]] = []


@pytest.fixture(autouse=True)
def _close_all() -> Iterator[None]:
    """Every daemon, engine and storage a test opened is closed (leader locks released)."""
    yield
    while _CLOSE:
        _CLOSE.pop()()


def _settings(url: str) -> Settings:
    # two feeds a tick: the seven demo feeds take several ticks, shared by the workers
    return Settings(database_url=url, allow_private=True, allow_file_urls=True, fetch_workers=2, feeds_per_tick=2)


def _worker(url: str) -> Daemon:
    """A worker as `aggregator run --role worker` makes it (its ticks called by hand)."""
    settings = _settings(url)
    storage = Storage(url)
    engine = ClusterEngine(ClusterSettings.from_settings(settings))
    daemon = Daemon(settings, storage, engine)
    _CLOSE.extend([storage.close, engine.close, lambda: daemon.shutdown(wait=False)])
    return daemon


def _prepared(url: str) -> Storage:
    storage = Storage(url)
    storage.upgrade()
    subscribe_demo(storage)
    _CLOSE.append(storage.close)
    return storage


def _wait(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _clustered_once(storage: Storage, clustered_by_reports: int) -> None:
    """Nothing pending, no article stored twice, and the passes' reports add up to the
    articles: each was clustered by exactly one pass."""
    counts = storage.counts()
    assert counts["pending"] == 0
    assert clustered_by_reports == counts["articles"] == 75
    assert_consistent(storage)


@pytest.mark.postgres
def test_one_leader_clusters_what_the_other_workers_store(pg_url: str) -> None:
    storage = _prepared(pg_url)
    one, two = _worker(pg_url), _worker(pg_url)
    first = one.tick()
    assert first is not None and len(first.feeds) == 2 and not first.cluster.skipped
    assert one.leadership.is_leader and first.cluster.clustered == sum(r.new for r in first.feeds)
    assert storage.clustering_leaders() == 1
    clustered = first.cluster.clustered
    # the other worker's ticks store but do not cluster: its articles wait for the leader
    for _ in range(2):
        report = two.tick()
        assert report is not None and len(report.feeds) == 2
        assert report.cluster.skipped and report.cluster.clustered == 0 and not two.leadership.is_leader
    waiting = storage.counts()["pending"]
    assert waiting > 0
    assert len(two.engine.clusterer) == 0  # it never clustered, nor caught up
    # the leader's next tick clusters its own new articles and the other's
    report = one.tick()
    assert report is not None and len(report.feeds) == 1 and not report.cluster.skipped
    assert report.cluster.clustered == waiting + sum(r.new for r in report.feeds)
    clustered += report.cluster.clustered
    assert report.cluster.caught_up == 0 and not report.cluster.rebuilt  # nobody else clustered
    _clustered_once(storage, clustered)
    # observable: the process gauge and the database's count of leaders
    exposition = metrics.render(storage).decode()
    assert "aggregator_clustering_leaders 1.0" in exposition
    assert "aggregator_clustering_leader 1.0" in exposition
    one.shutdown(wait=False)  # gives the leadership up
    assert storage.clustering_leaders() == 0 and not one.leadership.is_leader
    report = two.tick()
    assert report is not None and not report.cluster.skipped and two.leadership.is_leader


def _terminate_leader_session(url: str) -> None:
    """What a dropped connection does to the leader: its PostgreSQL session ends."""
    engine = create_engine(url)
    with engine.begin() as conn:
        assert conn.execute(text(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            " AND classid = :high AND objid = :low AND objsubid = 1"
        ), {"high": LEADER_LOCK_KEY >> 32, "low": LEADER_LOCK_KEY & 0xFFFFFFFF}).scalar_one()
    engine.dispose()

LEADER_PROCESS = """
import sys, time
from aggregator.ingest import Leadership
from aggregator.storage import Storage
leadership = Leadership(Storage(sys.argv[1]))
print(leadership.check(), flush=True)
time.sleep(600)
"""


@pytest.mark.postgres
@pytest.mark.parametrize("failure", ["connection", "process"])
def test_failover_to_the_next_worker_that_ticks(
    pg_url: str, failure: str, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """The leader's connection drops (its session is terminated) or its process is
    killed: PostgreSQL releases the lock, the other worker becomes the leader at its
    next tick and clusters the pending articles; none is lost or clustered twice."""
    caplog.set_level(logging.INFO, logger="aggregator.ingest")
    storage = _prepared(pg_url)
    survivor = _worker(pg_url)
    clustered = 0
    process = None
    if failure == "process":
        process = subprocess.Popen([sys.executable, "-c", LEADER_PROCESS, pg_url], stdout=subprocess.PIPE, text=True)
        _CLOSE.extend([process.stdout.close, process.wait, process.kill])  # type: ignore[union-attr]
        assert process.stdout is not None and process.stdout.readline().strip() == "True"
        leader = None
    else:
        leader = _worker(pg_url)
        report = leader.tick()
        assert report is not None and leader.leadership.is_leader and report.cluster.clustered > 0
        clustered += report.cluster.clustered
    report = survivor.tick()
    assert report is not None and report.cluster.skipped and report.feeds
    assert storage.counts()["pending"] > 0

    if process is not None:
        process.kill()  # SIGKILL: no goodbye, the server notices the closed socket
        process.wait()
    else:
        _terminate_leader_session(pg_url)
    _wait(lambda: storage.clustering_leaders() == 0)

    report = survivor.tick()  # takes the leadership, catches up (here: rebuilds) and clusters
    assert report is not None and not report.cluster.skipped and survivor.leadership.is_leader
    assert report.cluster.rebuilt
    clustered += report.cluster.clustered
    assert "leader state=acquired" in caplog.text
    while storage.counts()["pending"] or any(f.last_fetched_at is None for f in storage.list_feeds()):
        report = survivor.tick()
        assert report is not None
        clustered += report.cluster.clustered
    _clustered_once(storage, clustered)

    if leader is not None:
        # the old leader learns at its next tick that it lost the leadership, and only stores
        report = leader.tick()
        assert report is not None and report.cluster.skipped and not leader.leadership.is_leader
        assert "leader state=lost" in caplog.text
        assert storage.clustering_leaders() == 1


def test_sqlite_is_always_the_leader(tmp_path: Path) -> None:
    """The embedded default is one process: it always clusters, as before."""
    storage = Storage(f"sqlite:///{tmp_path / 'a.db'}")
    storage.upgrade()
    _CLOSE.append(storage.close)
    engine = ClusterEngine(ClusterSettings.from_settings(_settings(storage.url)))
    _CLOSE.append(engine.close)
    one, two = Leadership(storage), Leadership(storage)
    assert one.check() and two.check()
    assert storage.clustering_leaders() is None
    assert not cluster_if_leader(storage, engine, two).skipped
