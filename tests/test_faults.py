"""Faults that really happen: the process killed (SIGKILL) in the middle of an
ingest pass, SIGTERM during a long tick, the database locked, unreachable,
read-only or full. Each is caused for real (subprocesses and signals, a second
SQLite connection holding the write lock, a TCP proxy in front of PostgreSQL
that is stopped and restarted, a read-only SQLite URI, SQLite's
``max_page_count``) and the invariants are checked afterwards: nothing lost,
nothing duplicated, nothing half-written, the index matching the database,
and a clear error where an operator looks (log, exit code, /healthz, 503).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from aggregator.cli import demo_dir
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, document, run_pass, update_feed
from aggregator.parse import parse_feed
from aggregator.scheduler import Daemon
from aggregator.storage import Storage, StorageUnavailableError, open_storage
from aggregator.storage.facade import articles, stories
from aggregator.web import create_app
from tests.conftest import NOW
from tests.feedserver import FeedServer, Response

REPO = Path(__file__).resolve().parents[1]


def engine_for(settings: Settings) -> ClusterEngine:
    return ClusterEngine(ClusterSettings.from_settings(settings))


def cli(db_url: str, *args: str, env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "--database-url", db_url, *args],
        env={**os.environ, "AGGREGATOR_ALLOW_PRIVATE": "1", "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


def wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


def assert_consistent(storage: Storage) -> dict[str, int]:
    """Nothing duplicated or half-written; returns storage.counts()."""
    with storage.engine.connect() as conn:
        duplicates = conn.execute(
            select(articles.c.feed_id, articles.c.key).group_by(articles.c.feed_id, articles.c.key).having(func.count() > 1)
        ).all()
        assert duplicates == []
        # clustered <=> has a story; pending articles have none
        assert conn.execute(
            select(func.count()).select_from(articles).where(articles.c.clustered.is_(True), articles.c.story_id.is_(None))
        ).scalar_one() == 0
        assert conn.execute(
            select(func.count()).select_from(articles).where(articles.c.clustered.is_(False), articles.c.story_id.is_not(None))
        ).scalar_one() == 0
        per_story = dict(conn.execute(select(articles.c.story_id, func.count()).group_by(articles.c.story_id)).all())
        sources = dict(
            conn.execute(
                select(articles.c.story_id, func.count(func.distinct(func.coalesce(articles.c.source, ""))))
                .group_by(articles.c.story_id)
            ).all()
        )
        for row in conn.execute(select(stories)).all():
            if row.merged_into is None:
                # no story left empty or with stale counts by an interrupted pass
                assert row.article_count == per_story.get(row.id, 0) > 0, row
                assert row.source_count == sources.get(row.id, 0), row
            else:
                assert per_story.get(row.id, 0) == 0, row
        seqs = conn.execute(select(articles.c.cluster_seq).where(articles.c.clustered.is_(True))).scalars().all()
        assert len(seqs) == len(set(seqs))  # one place each in the clustering order
    return storage.counts()


def assert_index_matches_database(storage: Storage, settings: Settings) -> None:
    """A fresh engine rebuilt from the database puts an exact copy of every
    clustered article into that article's story."""
    engine = engine_for(settings)
    engine.rebuild(storage)
    latest = storage.latest_published()
    assert latest is not None
    # what the rebuilt index still holds: articles within the window of the newest
    since = latest - timedelta(hours=settings.cluster_window_hours / 2)
    checked = 0
    for item in storage.iter_stories():
        for article in item.articles:
            if article.signal == "empty" or not (article.text or article.summary) or article.published < since:
                continue
            decision = engine.clusterer.decide(engine.clusterer.prepare(document(article)))
            assert decision.story_id == article.story_id, (article.id, article.title, decision)
            checked += 1
    assert checked > 0


# --------------------------------------------------------------------------- SIGKILL mid-pass


@pytest.fixture
def server() -> Iterator[FeedServer]:
    with FeedServer() as srv:
        yield srv


DEMO = sorted(demo_dir().glob("*.xml"))


def second_version(body: bytes) -> bytes:
    """The same feed with every entry replaced by a new one (new ids, same links)."""
    return re.sub(rb"(<guid[^>]*>|<id>)", rb"\1v2-", body)


def serve_demo_copies(server: FeedServer, copies: int, delay: float) -> list[str]:
    """Every demo feed under ``copies`` paths (so copies across feeds join by URL)."""
    urls = []
    for copy in range(copies):
        for index, path in enumerate(DEMO):
            route = f"/{copy}/{path.name}"
            server.route(route, Response(body=path.read_bytes(), delay=delay * ((index + copy) % 4) / 3))
            urls.append(server.url(route))
    return urls


@pytest.mark.slow
def test_sigkill_in_the_middle_of_a_pass_loses_and_duplicates_nothing(
    tmp_path: Path, server: FeedServer
) -> None:
    db = f"sqlite:///{tmp_path / 'killed.db'}"
    settings = Settings(database_url=db, allow_private=True)
    urls = serve_demo_copies(server, copies=4, delay=1.5)
    storage = open_storage(db)
    for url in urls:
        storage.add_feed(url, now=NOW)

    # A first, complete pass over half the feeds gives the database stories.
    first = cli(db, "update", "--all", env={"AGGREGATOR_FETCH_WORKERS": "8"})
    output, _ = first.communicate(timeout=60)
    assert first.returncode == 0, output
    baseline = assert_consistent(storage)
    assert baseline["pending"] == 0 and baseline["stories"] > 0

    # New content arrives in every feed; a pass is killed while it stores it.
    for copy in range(4):
        for index, path in enumerate(DEMO):
            body = second_version(path.read_bytes())
            server.route(f"/{copy}/{path.name}", Response(body=body, delay=1.5 * ((index + copy) % 4) / 3))
    killed = cli(db, "update", "--all", env={"AGGREGATOR_FETCH_WORKERS": "2"})
    wait_for(lambda: storage.counts()["articles"] > baseline["articles"], timeout=60)
    killed.send_signal(signal.SIGKILL)
    killed.communicate(timeout=10)
    assert killed.returncode == -signal.SIGKILL
    after_kill = assert_consistent(storage)
    assert baseline["articles"] < after_kill["articles"]
    assert after_kill["pending"] > 0  # stored, not yet clustered: kept for the next pass

    # Restart: the next pass stores the rest and clusters everything pending.
    again = cli(db, "update", "--all", env={"AGGREGATOR_FETCH_WORKERS": "8"})
    output, _ = again.communicate(timeout=120)
    assert again.returncode == 0, output
    final = assert_consistent(storage)
    assert final["pending"] == 0
    per_feed = {feed.url: feed.article_count for feed in storage.list_feeds()}
    expected = {}
    for copy in range(4):
        for path in DEMO:
            url = server.url(f"/{copy}/{path.name}")
            keys = {e.key for body in (path.read_bytes(), second_version(path.read_bytes())) for e in parse_feed(body, url=url, now=NOW).entries}
            expected[url] = len(keys)
    assert per_feed == expected  # every entry of every version, once
    assert_index_matches_database(storage, settings)
    storage.close()


# --------------------------------------------------------------------------- SIGTERM during a long tick


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sigterm_during_a_long_tick_stops_within_seconds(tmp_path: Path, server: FeedServer) -> None:
    """A tick of 24 feeds that each take 2 s with 2 workers would run 24 s; on
    SIGTERM no further fetch starts, what was fetched is stored and clustered,
    and the process exits within a few seconds."""
    db = f"sqlite:///{tmp_path / 'term.db'}"
    storage = open_storage(db)
    for index in range(24):
        path = DEMO[index % len(DEMO)]
        server.route(f"/{index}.xml", Response(body=path.read_bytes(), delay=2.0))
        storage.add_feed(server.url(f"/{index}.xml"), now=NOW)
    proc = cli(
        db,
        "run",
        "--port",
        str(free_port()),
        env={"AGGREGATOR_FETCH_WORKERS": "2", "AGGREGATOR_TICK_SECONDS": "1", "AGGREGATOR_FETCH_TIMEOUT": "5"},
    )
    try:
        wait_for(lambda: len(server.requests) >= 2, timeout=30)
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, output
    assert elapsed < 6, (elapsed, output)
    assert "event=scheduler state=stopped" in output
    fetched = len(server.requests)
    assert fetched < 24
    counts = assert_consistent(storage)
    assert counts["pending"] == 0  # what was stored was clustered before exit
    done = [feed for feed in storage.list_feeds() if feed.last_fetched_at is not None]
    assert 0 < len(done) <= fetched
    assert all(feed.error_count == 0 for feed in done)
    storage.close()


# --------------------------------------------------------------------------- database locked


def short_busy_timeout(storage: Storage, milliseconds: int) -> None:
    """Make this storage's SQLite connections wait ``milliseconds`` for a lock
    (30 s in production) by running after the facade's own connect hook."""

    @event.listens_for(storage.engine, "connect")
    def _busy(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout={milliseconds}")
        cursor.close()

    storage.engine.dispose()


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[None]:
    """Another process's view: a connection holding SQLite's write lock."""
    conn = sqlite3.connect(path, timeout=5, isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_locked_database_fails_the_tick_which_retries_later(
    tmp_path: Path, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "locked.db"
    settings = Settings(database_url=f"sqlite:///{path}", allow_private=True, fetch_timeout=5.0)
    storage = open_storage(settings.database_url)
    short_busy_timeout(storage, 300)
    server.route("/feed.xml", Response(body=DEMO[0].read_bytes()))
    feed = storage.add_feed(server.url("/feed.xml"), now=NOW)
    daemon = Daemon(settings, storage, engine_for(settings))
    client = create_app(settings, storage).test_client()
    caplog.set_level(logging.ERROR, logger="aggregator.scheduler")

    with write_lock(path):
        assert daemon.tick() is None
        assert daemon.last_tick_ok is False
        assert "tick outcome=error" in caplog.text and "database is locked" in caplog.text
        # reads still work beside a writer (WAL); writes answer 503, not a crash
        assert client.get("/healthz").status_code == 200
        assert client.get("/").status_code == 200
        token_client = create_app(settings.replace(api_token="t"), storage).test_client()
        response = token_client.post(
            "/api/feeds", json={"url": "https://new.example/feed"}, headers={"Authorization": "Bearer t"}
        )
        assert response.status_code == 503 and response.headers["Retry-After"]
    # nothing of the failed tick was written: the feed is still due, not errored
    stored = storage.get_feed(feed.id)
    assert stored is not None and stored.last_fetched_at is None and stored.error_count == 0

    report = daemon.tick()  # the lock is gone: the next tick works
    assert report is not None and report.feeds[0].status == "ok"
    assert daemon.last_tick_ok is True
    assert storage.counts()["pending"] == 0 and storage.counts()["articles"] > 0
    assert_consistent(storage)
    storage.close()


# --------------------------------------------------------------------------- read-only and full


def test_read_only_database_is_a_clear_error_and_nothing_is_corrupted(tmp_path: Path, server: FeedServer) -> None:
    path = tmp_path / "ro.db"
    url = f"sqlite:///{path}"
    storage = open_storage(url)
    server.route("/feed.xml", Response(body=DEMO[0].read_bytes()))
    storage.add_feed(server.url("/feed.xml"), now=NOW)
    storage.close()

    # (root ignores file modes, so read-only is SQLite's own: a mode=ro URI)
    ro_url = f"sqlite:///file:{path}?mode=ro&uri=true"
    settings = Settings(database_url=ro_url, allow_private=True)
    ro = Storage(ro_url)
    with pytest.raises(StorageUnavailableError, match="readonly database"):
        run_pass(ro, engine_for(settings), settings, all_feeds=True)
    daemon = Daemon(settings, ro, engine_for(settings))
    assert daemon.tick() is None
    client = create_app(settings, ro).test_client()
    assert client.get("/").status_code == 200  # reading still works
    ro.close()

    proc = cli(ro_url, "update", "--all")
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 3, output
    assert "readonly database" in output

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    writable = Storage(url)
    assert writable.counts()["articles"] == 0
    feed = writable.list_feeds()[0]
    assert feed.last_fetched_at is None and feed.error_count == 0  # untouched
    assert update_feed(writable, feed, settings.replace(database_url=url)).status == "ok"
    writable.close()


def test_full_disk_is_a_clear_error_and_nothing_is_corrupted(tmp_path: Path, server: FeedServer) -> None:
    """SQLITE_FULL through the real engine: every connection of the storage may
    grow the file by only a few pages (``PRAGMA max_page_count``)."""
    path = tmp_path / "full.db"
    settings = Settings(database_url=f"sqlite:///{path}", allow_private=True)
    storage = open_storage(settings.database_url)
    items = "".join(
        f"<item><guid>big{i}</guid><title>Entry {i}</title><description>{'Long text about the harbour. ' * 200}</description></item>"
        for i in range(200)
    )
    server.route("/big.xml", Response(body=f'<rss version="2.0"><channel><title>Big</title>{items}</channel></rss>'.encode()))
    server.route("/small.xml", Response(body=DEMO[0].read_bytes()))
    big = storage.add_feed(server.url("/big.xml"), now=NOW)
    small = storage.add_feed(server.url("/small.xml"), now=NOW)
    assert update_feed(storage, small, settings).status == "ok"
    before = storage.counts()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]

    @event.listens_for(storage.engine, "connect")
    def _tiny_disk(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA max_page_count={pages + 4}")
        cursor.close()

    storage.engine.dispose()
    engine = engine_for(settings)
    daemon = Daemon(settings, storage, engine)
    try:
        report = run_pass(storage, engine, settings, all_feeds=True)
    except StorageUnavailableError as exc:
        assert "database or disk is full" in str(exc)
        assert daemon.tick() is None
    else:  # the small write of the error state still fitted: the feed says why
        by_feed = {r.feed_id: r for r in report.feeds}
        assert by_feed[big.id].status == "error"
        assert "database or disk is full" in (by_feed[big.id].error or "")
    assert storage.counts()["articles"] == before["articles"]  # the big feed's transaction rolled back
    storage.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # space again: everything arrives
    healed = open_storage(settings.database_url)
    report = run_pass(healed, engine_for(settings), settings, all_feeds=True)
    assert {r.feed_id: r.status for r in report.feeds}[big.id] == "ok"
    assert healed.counts()["articles"] == before["articles"] + 200
    assert_consistent(healed)
    healed.close()


# --------------------------------------------------------------------------- PostgreSQL restarted


class TcpProxy:
    """127.0.0.1:port -> target, that can be stopped (every connection cut,
    new ones refused) and started again on the same port: a database restart
    as the client sees it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._listener = listener
        thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                thread = threading.Thread(target=self._pipe, args=(source, sink), daemon=True)
                thread.start()
                self._threads.append(thread)

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(None)
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.mark.postgres
def test_postgresql_restart_fails_the_tick_and_answers_503_then_recovers(
    pg_url: str, server: FeedServer, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.engine import make_url

    real = make_url(pg_url)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432))
    proxy.start()
    url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    upgrader = Storage(pg_url)
    upgrader.upgrade()
    upgrader.close()
    storage = open_storage(url)
    settings = Settings(database_url=url, allow_private=True, fetch_timeout=5.0)
    server.route("/a.xml", Response(body=DEMO[0].read_bytes()))
    server.route("/b.xml", Response(body=DEMO[1].read_bytes()))
    storage.add_feed(server.url("/a.xml"), now=NOW)
    daemon = Daemon(settings, storage, engine_for(settings))
    client = create_app(settings, storage).test_client()
    try:
        first = daemon.tick()
        assert first is not None and first.feeds[0].status == "ok"
        assert client.get("/api/feeds").status_code == 200
        storage.add_feed(server.url("/b.xml"), now=NOW)

        proxy.stop()  # the server goes away, connections and all
        caplog.set_level(logging.ERROR, logger="aggregator.scheduler")
        assert daemon.tick() is None
        assert "tick outcome=error" in caplog.text
        for path in ("/", "/api/stories", "/feed.atom", "/feeds", "/readyz"):
            response = client.get(path)
            if path == "/readyz" and response.status_code == 404:
                continue  # (no readiness endpoint in this version)
            assert response.status_code == 503, path
            assert response.headers.get("Retry-After"), path

        proxy.start()  # and comes back
        report = wait_for(daemon.tick, timeout=15, interval=0.2)
        assert [r.status for r in report.feeds] == ["ok"]
        assert client.get("/api/stories").status_code == 200
        assert storage.counts()["pending"] == 0
        assert_consistent(storage)
    finally:
        storage.close()
        proxy.stop()
