"""The daemon end to end: `aggregator run` as a real process, the demo feeds
served over HTTP on 127.0.0.1, its tick ingesting and clustering them, and
its story feeds read back over HTTP and parsed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import feedparser
import httpx
import pytest

from aggregator.cli import demo_dir
from tests.feedserver import FeedServer, Response

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.2):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting")


@pytest.fixture
def demo_server() -> Iterator[FeedServer]:
    with FeedServer() as server:
        for path in sorted(demo_dir().glob("*.xml")):
            body = path.read_bytes()
            server.route(
                f"/{path.name}",
                Response(body=body, etag=f'"{len(body)}"', headers={"Content-Type": "application/xml"}),
            )
        yield server


def start_daemon(tmp_path: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'daemon.db'}",
        "AGGREGATOR_ALLOW_PRIVATE": "1",
        "AGGREGATOR_TICK_SECONDS": "1",
        "AGGREGATOR_LOG_LEVEL": "INFO",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "run", "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        output, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        raise AssertionError("daemon did not stop within 15 s of SIGTERM:\n" + output) from None
    return proc.returncode, output


def test_daemon_ticks_then_serves_story_feeds(tmp_path: Path, demo_server: FeedServer) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env_db = f"sqlite:///{tmp_path / 'daemon.db'}"
    for path in sorted(demo_dir().glob("*.xml")):
        subprocess.run(
            [sys.executable, "-m", "aggregator.cli", "--database-url", env_db, "feeds", "add", demo_server.url(f"/{path.name}")],
            check=True,
            capture_output=True,
        )
    proc = start_daemon(tmp_path, port)
    try:
        def stories() -> list[dict[str, object]] | None:
            data = httpx.get(f"{base}/api/stories?min_sources=2", timeout=5).json()
            return data["items"] if len(data["items"]) >= 10 else None

        multi = wait_for(stories)
        assert httpx.get(f"{base}/healthz", timeout=5).json()["status"] == "ok"

        river = httpx.get(f"{base}/feed.atom?min_sources=2", timeout=5)
        assert river.status_code == 200
        parsed = feedparser.parse(river.content)
        assert not parsed.bozo, parsed.get("bozo_exception")
        assert len(parsed.entries) == len(multi)

        story_id = multi[0]["id"]
        response = httpx.get(f"{base}/stories/{story_id}/feed.atom", timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/atom+xml")
        feed = feedparser.parse(response.content)
        assert not feed.bozo
        assert len(feed.entries) == multi[0]["article_count"]
        assert all(entry.link.startswith("https://") for entry in feed.entries)
        assert any(link.rel == "self" for link in feed.feed.links)

        page = httpx.get(f"{base}/", timeout=5)
        assert page.status_code == 200 and 'type="application/atom+xml"' in page.text

        # the feeds were polled with conditional GET by later ticks? Not yet due: one request each.
        assert all(len(demo_server.requests_to(f"/{p.name}")) == 1 for p in demo_dir().glob("*.xml"))
    finally:
        code, output = stop(proc)
    assert code == 0, output
    assert "outcome=ok" in output and "event=scheduler state=stopped" in output


def test_sigterm_during_a_slow_tick_finishes_it(tmp_path: Path, demo_server: FeedServer) -> None:
    """SIGTERM while a fetch is in flight: the daemon stops within seconds and the
    database stays consistent (the tick finishes; nothing half-written)."""
    demo_server.route("/slow.xml", Response(body=(demo_dir() / "meridian-wire.xml").read_bytes(), delay=2.0))
    db = f"sqlite:///{tmp_path / 'daemon.db'}"
    subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "--database-url", db, "feeds", "add", demo_server.url("/slow.xml")],
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = start_daemon(tmp_path, port)
    wait_for(lambda: demo_server.requests_to("/slow.xml"))
    started = time.monotonic()
    code, output = stop(proc)
    assert code == 0, output
    assert time.monotonic() - started < 10
    out = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "--database-url", db, "stories", "export"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    exported = sum(line.count('"url"') for line in out.splitlines())
    listed = subprocess.run(
        [sys.executable, "-m", "aggregator.cli", "--database-url", db, "feeds", "list", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # the tick in flight completed: its articles are stored and clustered
    assert '"article_count": 17' in listed
    assert exported == 17


def test_sighup_reloads_settings_without_dropping_the_server(tmp_path: Path) -> None:
    config_file = tmp_path / "aggregator.toml"
    config_file.write_text('log_format = "kv"\ntick_seconds = 1\n')
    port = free_port()
    env = {
        **os.environ,
        "AGGREGATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'daemon.db'}",
        "AGGREGATOR_CONFIG": str(config_file),
        "AGGREGATOR_LOG_LEVEL": "INFO",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "aggregator.cli", "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200)
        config_file.write_text('log_format = "json"\ntick_seconds = 2\nweb_threads = 3\nrebuild_workers = 0\n')
        proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200  # same server, same port
        config_file.write_text("this is not toml = =\n")
        proc.send_signal(signal.SIGHUP)  # a broken file keeps the running settings
        time.sleep(1)
        assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
    finally:
        code, output = stop(proc)
    assert code == 0, output
    import json

    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]  # the new format took effect
    reloads = [e for e in events if e.get("event") == "reload"]
    assert reloads[0]["outcome"] == "ok" and reloads[0]["needs_restart"] == "web_threads"
    assert reloads[1]["outcome"] == "error" and reloads[1]["kept"] == "previous settings"
    assert any(e.get("event") == "reconfigured" and e["tick_seconds"] == 2 for e in events)
