"""Shared fixtures: a real SQLite database per test, PostgreSQL where marked,
and the path of ../shared."""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from aggregator.cluster.sketch import CandidateIndex, SketchParams
from aggregator.config import Settings
from aggregator.coordination import index_storage_config
from aggregator.storage import Storage

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REDIS_URL = "redis://127.0.0.1:6379/15"  # tests of the shared index; each uses its own index name
POSTGRES_URL = os.environ.get("AGGREGATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def shared_path(*parts: str) -> Path:
    """A path under ../shared, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared is not beside the checkout)")
    return path


def upgrade_concurrently(url: str, processes: int = 4) -> list[BaseException]:
    """``processes`` storages opened on ``url`` that all upgrade its schema at the same
    moment (a barrier), as processes starting together do; returns what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(processes)

    def upgrade() -> None:
        storage = Storage(url)
        try:
            barrier.wait()
            storage.ensure_schema(auto_upgrade=True)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)
        finally:
            storage.close()

    threads = [threading.Thread(target=upgrade) for _ in range(processes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'aggregator.db'}",
        allow_private=True,
        fetch_timeout=5.0,
        fetch_workers=2,
    )


@pytest.fixture
def storage(settings: Settings) -> Iterator[Storage]:
    store = Storage(settings.database_url)
    store.ensure_schema(auto_upgrade=True)
    yield store
    store.close()


@pytest.fixture
def index_config() -> Iterator[dict[str, object]]:
    """datasketch's storage_config for a fresh index name in Redis database 15 (deleted afterwards)."""
    if not _port_open("127.0.0.1", 6379):
        if os.environ.get("CI"):
            pytest.fail("Redis is not running at 127.0.0.1:6379 (CI must start it)")
        pytest.skip("Redis is not running at 127.0.0.1:6379")
    config = index_storage_config(REDIS_URL, f"test-{uuid.uuid4().hex[:10]}")
    assert config is not None
    yield config
    index = CandidateIndex(SketchParams(), 0.1, config)
    index.clear()
    index.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A clean PostgreSQL database (schema dropped and recreated) for one test."""
    if not _port_open("127.0.0.1", 5432):
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not running at 127.0.0.1:5432 (CI must start it)")
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    yield POSTGRES_URL
