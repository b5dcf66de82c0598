"""The command line, run in-process with a real SQLite file."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from aggregator.cli import demo_dir, main
from tests.conftest import shared_path


def run(args: list[str], db: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("AGGREGATOR_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("AGGREGATOR_LOG_LEVEL", "WARNING")
    out = io.StringIO()
    code = main(args, out=out)
    return code, out.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


def test_feeds_add_list_remove(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    local = demo_dir() / "meridian-wire.xml"
    code, out = run(["feeds", "add", str(local), "--folder", "Wire"], db, monkeypatch)
    assert code == 0 and "added feed 1" in out
    code, out = run(["feeds", "add", str(local)], db, monkeypatch)
    assert code == 1  # already subscribed
    code, out = run(["feeds", "add", "https://news.example/rss"], db, monkeypatch)
    assert code == 0
    code, out = run(["feeds", "add", "ftp://news.example/rss"], db, monkeypatch)
    assert code == 1
    code, out = run(["feeds", "add", str(tmp_path / "missing.xml")], db, monkeypatch)
    assert code == 1
    code, out = run(["feeds", "list", "--json"], db, monkeypatch)
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["folder"]) for r in rows] == [(1, "Wire"), (2, None)]
    assert rows[0]["url"] == local.resolve().as_uri()
    # the same record as GET /api/feeds gives
    assert {"article_count", "site_url", "added_at", "last_error", "stopped"} <= set(rows[0])
    code, out = run(["feeds", "remove", "2"], db, monkeypatch)
    assert code == 0
    code, out = run(["feeds", "remove", "2"], db, monkeypatch)
    assert code == 1


def test_import_export_update_and_stories_export(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(["feeds", "import", str(demo_dir() / "demo.opml")], db, monkeypatch)
    assert code == 0 and "imported 7 feeds" in out
    code, out = run(["feeds", "export"], db, monkeypatch)
    assert out.count("xmlUrl=") == 7 and 'text="Local"' in out

    code, out = run(["update"], db, monkeypatch)
    assert code == 0
    assert out.count(" new, ") == 7
    assert "clustered 75 articles" in out

    code, out = run(["update", "--all"], db, monkeypatch)
    assert code == 0 and "clustered 0 articles" in out  # nothing new, nothing twice

    code, out = run(["feeds", "list"], db, monkeypatch)
    assert "Meridian" in out and "status=ok" in out

    code, out = run(["stories", "export"], db, monkeypatch)
    stories = [json.loads(line) for line in out.splitlines()]
    assert sum(len(s["articles"]) for s in stories) == 75
    first = stories[0]
    assert set(first) == {"id", "headline", "articles"}
    assert set(first["articles"][0]) == {"id", "url", "title", "source", "published"}
    assert any(len({a["source"] for a in s["articles"]}) >= 3 for s in stories)


def test_index_rebuild(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(["run", "--demo", "--once"], db, monkeypatch)
    code, out = run(["index", "rebuild"], db, monkeypatch)
    assert code == 0 and "index rebuilt from 75 stored articles" in out and "\r" not in out


def test_update_exits_zero_when_feeds_fail(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    broken = tmp_path / "broken.xml"
    broken.write_text("<html><body>502 Bad Gateway</body></html>")
    run(["feeds", "add", str(broken)], db, monkeypatch)
    code, out = run(["update", "--all"], db, monkeypatch)
    assert code == 0 and "error" in out
    code, out = run(["feeds", "list"], db, monkeypatch)
    assert "ERROR x1" in out


def test_service_errors_exit_3(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGGREGATOR_PORT", "not-a-port")
    code, _ = run(["feeds", "list"], db, monkeypatch)
    assert code == 3
    monkeypatch.delenv("AGGREGATOR_PORT")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, _ = run(["feeds", "list"], blocker / "sub" / "x.db", monkeypatch)
    assert code == 3


def test_db_upgrade_and_status(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(["db", "status"], db, monkeypatch)
    assert code == 3 and "OUT OF DATE" in out
    code, out = run(["db", "upgrade"], db, monkeypatch)
    from aggregator.storage.schema import head_revision

    head = head_revision()
    assert code == 0 and f"database at revision {head} (head {head})" in out
    code, out = run(["db", "status"], db, monkeypatch)
    assert code == 0 and "current" in out


def test_run_once_demo(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = run(["run", "--demo", "--once"], db, monkeypatch)
    assert code == 0
    assert "7 feeds, 75 articles" in out


def test_config_shows_settings_without_secrets(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGGREGATOR_API_TOKEN", "hunter2")
    code, out = run(["config"], db, monkeypatch)
    assert code == 0 and "hunter2" not in out and 'api_token = "***"' in out


def _seed_records() -> list[dict[str, object]]:
    seeds = shared_path("seeds")
    dates = {"000": "2022-03-30", "002": "2022-03-28", "004": "2022-03-21", "001": "2025-06-03", "003": "2025-06-03"}
    records = []
    for path in sorted(seeds.glob("*.txt")):
        prefix = path.name[:3]
        title, _, body = path.read_text(encoding="utf-8").partition("\n")
        records.append(
            {
                "id": prefix,
                "title": title.strip(),
                "text": body.strip(),
                "published": f"{dates[prefix]}T12:00:00Z",
                "source": None,
                "url": None,
                "cluster": "june-2025" if prefix in {"001", "003"} else prefix,
            }
        )
    return records


def test_evaluate_the_seed_reports(db: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _seed_records()))
    predictions = tmp_path / "out.tsv"
    code, out = run(["evaluate", str(path), "--predictions", str(predictions)], db, monkeypatch)
    assert code == 0
    figures = json.loads(out)
    assert {"n", "stories", "bcubed_p", "bcubed_r", "bcubed_f1", "pairwise_f1", "ari", "seconds"} <= set(figures)
    story = dict(line.split("\t") for line in predictions.read_text().splitlines())
    assert story["001"] == story["003"]
    assert len({story["000"], story["002"], story["004"], story["001"]}) == 4
    assert figures["bcubed_f1"] == 1.0


def test_wsgi_entry_serves_and_refuses_an_old_schema(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aggregator.storage import SchemaOutOfDateError
    from aggregator.wsgi import make_app

    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    app = make_app()  # SQLite: upgraded on first start
    assert app.test_client().get("/healthz").status_code == 200
    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    if not _postgres_up():
        pytest.skip("PostgreSQL is not running at 127.0.0.1:5432")
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    with pytest.raises(SchemaOutOfDateError):
        make_app()


def test_wsgi_entry_logs_as_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import logging

    from aggregator import logs
    from aggregator.wsgi import make_app

    monkeypatch.setenv("AGGREGATOR_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    monkeypatch.setenv("AGGREGATOR_LOG_FORMAT", "json")
    monkeypatch.setenv("AGGREGATOR_LOG_LEVEL", "WARNING")
    try:
        make_app()
        logging.getLogger("aggregator.web").info("not shown at WARNING")
        logging.getLogger("aggregator.web").warning("storage unavailable")
        (line,) = capsys.readouterr().err.splitlines()
        assert json.loads(line)["msg"] == "storage unavailable"
    finally:
        logs.setup("WARNING", "kv")


def _postgres_up() -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", 5432)) == 0
