"""Logging, /healthz, /readyz and /metrics."""

from __future__ import annotations

import io
import json
import logging
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from aggregator import logs
from aggregator.cli import demo_dir, import_opml
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.ingest import ClusterEngine, run_pass
from aggregator.storage import Storage
from aggregator.web import create_app


def _capture(fmt: str) -> io.StringIO:
    stream = io.StringIO()
    logs.setup("INFO", fmt, stream)
    return stream


@pytest.fixture(autouse=True)
def _restore_logging() -> object:
    yield
    logs.setup("WARNING", "kv")


def test_key_value_lines_parse_back_and_hide_secrets() -> None:
    stream = _capture("kv")
    log = logging.getLogger("aggregator.test")
    logs.event(log, "fetch", feed=3, url="https://bob:hunter2@news.example/rss?api_key=abc&x=1", outcome="ok",
               error="two words", seconds=0.25)
    (line,) = stream.getvalue().splitlines()
    fields = dict(part.split("=", 1) for part in shlex.split(line))
    assert fields["event"] == "fetch" and fields["feed"] == "3" and fields["level"] == "INFO"
    assert fields["error"] == "two words" and fields["seconds"] == "0.250"
    assert "hunter2" not in line and "abc" not in line
    assert fields["url"] == "https://bob:***@news.example/rss?api_key=%2A%2A%2A&x=1"


def test_json_lines_parse_back_once_each() -> None:
    stream = _capture("json")
    log = logging.getLogger("aggregator.test")
    logs.event(log, "tick", outcome="ok", feeds=4)
    logging.getLogger("other.library").warning("plain message with https://u:p@h.example/")
    logs.setup("INFO", "json", stream)  # set up twice: still one handler, nothing printed twice
    logs.event(log, "tick", outcome="ok", feeds=5)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line.get("feeds") for line in lines] == [4, None, 5]
    assert lines[0]["event"] == "tick" and lines[0]["level"] == "INFO"
    assert lines[1]["msg"] == "plain message with https://u:***@h.example/"


def _app(settings: Settings, storage: Storage):  # type: ignore[no-untyped-def]
    return create_app(settings, storage).test_client()


def test_healthz_is_liveness_and_readyz_checks_database_schema_and_tick(settings: Settings, storage: Storage) -> None:
    client = _app(settings, storage)
    assert client.get("/healthz").get_json() == {"status": "ok"}
    body = client.get("/readyz")
    assert body.status_code == 503
    assert body.get_json()["checks"] == {"database": "ok", "schema": "ok", "tick": "no tick has completed yet"}
    storage.record_tick(datetime.now(UTC), ok=True)
    assert client.get("/readyz").status_code == 200
    storage.record_tick(datetime.now(UTC) - timedelta(hours=2), ok=True)
    stale = client.get("/readyz")
    assert stale.status_code == 503 and "s ago" in stale.get_json()["checks"]["tick"]


def test_readyz_flips_to_503_when_the_database_is_gone(settings: Settings, storage: Storage, tmp_path: Path) -> None:
    client = _app(settings, storage)
    storage.record_tick(datetime.now(UTC), ok=True)
    assert client.get("/readyz").status_code == 200
    storage.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"aggregator.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "aggregator.db").mkdir()
    gone = client.get("/readyz")
    assert gone.status_code == 503
    assert "database unavailable" in gone.get_json()["checks"]["database"]
    assert client.get("/healthz").status_code == 200


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_parse_and_move_as_the_service_works(settings: Settings, storage: Storage) -> None:
    client = _app(settings, storage)
    before = _samples(client.get("/metrics").get_data(as_text=True))
    import_opml(storage, demo_dir() / "demo.opml")
    run_pass(storage, ClusterEngine(ClusterSettings.from_settings(settings)), settings, all_feeds=True)
    client.get("/")
    response = client.get("/metrics")
    assert response.content_type.startswith("text/plain")
    after = _samples(response.get_data(as_text=True))
    assert after[("aggregator_articles", ())] == 75
    assert after[("aggregator_feeds", ())] == 7
    assert after[("aggregator_feeds_in_error", ())] == 0
    assert after[("aggregator_articles_per_story_count", ())] == after[("aggregator_stories", ())]
    key = ("aggregator_http_requests_total", (("method", "GET"), ("route", "/"), ("status", "200")))
    assert after[key] == before.get(key, 0) + 1

    def moved(name: str, labels: tuple[tuple[str, str], ...] = ()) -> float:
        return after.get((name, labels), 0) - before.get((name, labels), 0)

    assert moved("aggregator_fetches_total", (("outcome", "ok"), ("status", "200"))) == 7
    assert moved("aggregator_fetch_seconds_count") == 7
    assert moved("aggregator_articles_ingested_total", (("kind", "new"),)) == 75
    assert moved("aggregator_stories_created_total") == after[("aggregator_stories", ())]
    clustered = sum(v for (name, _), v in after.items() if name == "aggregator_articles_clustered_total")
    assert clustered - sum(v for (name, _), v in before.items() if name == "aggregator_articles_clustered_total") == 75
    # the index holds the clustering window only (the demo spans five days)
    window = storage.status(datetime.now(UTC), window_hours=settings.cluster_window_hours).index_articles
    assert after[("aggregator_index_entries", ())] == window < 75
    assert ("aggregator_http_request_seconds_bucket", (("le", "0.1"), ("route", "/"))) in after
