"""The deployment of docker-compose.yml as processes (scripts/topology.py) against the real
PostgreSQL and Redis: two workers started at the same moment give exactly the stories of
one process on SQLite, and the web + two workers topology starts, serves and stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import REPO, _port_open
from tests.feedserver import FeedServer, Response

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

TOPOLOGY = REPO / "scripts" / "topology.py"
AGGREGATOR = [sys.executable, "-m", "aggregator.cli"]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A Redis URL (database 14) and a fresh index name are given by the tests; the
    keys of that name are deleted afterwards."""
    if not _port_open("127.0.0.1", 6379):
        if os.environ.get("CI"):
            pytest.fail("Redis is not running at 127.0.0.1:6379 (CI must start it)")
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    yield "redis://127.0.0.1:6379/14"


def _drop_index(name: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=14)
    for key in list(client.scan_iter(match=f"{name}_*".encode(), count=1000)):
        client.delete(key)
    client.close()


@pytest.fixture
def demo_server() -> Iterator[FeedServer]:
    """The bundled demo feeds (data/*.xml) served over HTTP."""
    server = FeedServer().start()
    for path in sorted((REPO / "data").glob("*.xml")):
        server.route("/" + path.name, Response(body=path.read_bytes(), headers={"Content-Type": "application/rss+xml"}))
    yield server
    server.stop()


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    env.update(AGGREGATOR_DATABASE_URL=database_url, AGGREGATOR_ALLOW_PRIVATE="true", **extra)
    return env


def _stories(database_url: str) -> set[frozenset[str]]:
    out = subprocess.run([*AGGREGATOR, "stories", "export"], env=_env(database_url), check=True,
                         capture_output=True, text=True).stdout
    return {frozenset(a["url"] for a in json.loads(line)["articles"]) for line in out.splitlines() if line}


def test_two_workers_at_once_give_the_single_process_stories(
    pg_url: str, redis_url: str, demo_server: FeedServer, tmp_path: Path
) -> None:
    base = demo_server.base_url
    sqlite_url = f"sqlite:///{tmp_path / 'single.db'}"
    subprocess.run([*AGGREGATOR, "run", "--demo", "--once", "--demo-base", base], env=_env(sqlite_url),
                   check=True, capture_output=True)
    single = _stories(sqlite_url)
    assert len(single) > 10 and any(len(story) > 1 for story in single)

    name = f"test-{uuid.uuid4().hex[:8]}"
    before = len(demo_server.requests)
    try:
        result = subprocess.run(
            [sys.executable, str(TOPOLOGY), "once", "--workers", "2", "--demo-base", base,
             "--database-url", pg_url, "--index-url", redis_url, "--index-name", name],
            # at most 4 feeds a worker: the two workers must share the 7 demo feeds out
            env=_env(pg_url, AGGREGATOR_FEEDS_PER_TICK="4"), capture_output=True, text=True, timeout=180,
        )
        assert result.returncode == 0, result.stderr
        assert sorted(line.split()[1] for line in result.stdout.splitlines() if line.startswith("demo:")) == ["3", "4"]
        assert _stories(pg_url) == single
        # no feed fetched twice (claims), so no article stored twice
        paths = [r.path for r in demo_server.requests[before:]]
        assert sorted(paths) == sorted(set(paths)), result.stdout + result.stderr
        assert sorted(paths) == sorted(set(paths)) and len(paths) == 7
        engine = create_engine(pg_url)
        with engine.connect() as conn:
            articles, distinct = conn.execute(
                text("SELECT count(*), count(DISTINCT (feed_id, key)) FROM articles")
            ).one()
            pending = conn.execute(text("SELECT count(*) FROM articles WHERE NOT clustered")).scalar_one()
        engine.dispose()
        assert articles == distinct == sum(len(story) for story in single) and pending == 0
    finally:
        _drop_index(name)


def test_topology_script_starts_web_and_two_workers_and_stops_them(
    pg_url: str, redis_url: str, demo_server: FeedServer, tmp_path: Path
) -> None:
    name = f"test-{uuid.uuid4().hex[:8]}"
    run_dir = tmp_path / "run"
    env = _env(pg_url, AGGREGATOR_TICK_SECONDS="1")
    started = subprocess.run(
        [sys.executable, str(TOPOLOGY), "start", "--run-dir", str(run_dir), "--web-port", "18093",
         "--database-url", pg_url, "--index-url", redis_url, "--index-name", name, "--timeout", "60"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    try:
        assert started.returncode == 0, started.stderr + "".join(
            p.read_text() for p in run_dir.glob("*.log")
        )
        pids = json.loads((run_dir / "pids.json").read_text())
        assert sorted(pids) == ["web", "worker1", "worker2"]
        # subscribe through the shared database; a worker picks the feeds up at its next tick
        for path in sorted((REPO / "data").glob("*.xml")):
            subprocess.run([*AGGREGATOR, "feeds", "add", demo_server.url("/" + path.name)], env=env,
                           check=True, capture_output=True)
        deadline = time.monotonic() + 60
        river = b""
        while time.monotonic() < deadline:
            with urllib.request.urlopen("http://127.0.0.1:18093/api/stories?page_size=100", timeout=5) as response:
                river = response.read()
            if json.loads(river)["total"] > 10 and len({r.path for r in demo_server.requests}) == 7:
                break
            time.sleep(0.5)
        assert json.loads(river)["total"] > 10
        paths = [r.path for r in demo_server.requests]
        assert len(paths) == len(set(paths)) == 7  # each feed fetched once by one of the workers
    finally:
        stopped = subprocess.run([sys.executable, str(TOPOLOGY), "stop", "--run-dir", str(run_dir)],
                                 capture_output=True, text=True, timeout=60)
        _drop_index(name)
    assert stopped.returncode == 0
    assert json.loads(stopped.stdout)["killed"] == []
