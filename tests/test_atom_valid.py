"""Every feed the service serves for the demo is valid.

The bundled demo is imported and ingested through the real pipeline, then every
document the app serves is fetched through the real Flask app: the river with
each filter (``min_sources``, ``q``, ``feed``, ``folder`` and a combination),
every story's feed, and every page of every paged feed (found by following
``rel="next"``), in Atom and in RSS. Atom documents are checked against RFC
4287's RELAX NG grammar with jing (``../shared/schemas/atom.rnc``; skipped with
a reason when jing or the grammar is absent -- CI installs jing) and everything
is read back with feedparser, which must raise no bozo flag. The entries'
required parts (ids, dates, authors, links, source, content and summary) are
checked on the parsed documents.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import feedparser
import pytest
from flask.testing import FlaskClient

from aggregator import cli, ingest
from aggregator.cluster import ClusterSettings
from aggregator.config import Settings
from aggregator.storage import Storage
from aggregator.web import create_app

BASE = "https://news.example.org"
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "atom.rnc"
PAGE_SIZE = 3  # small enough that the river and the big stories have several pages
MAX_PAGES = 100


@dataclass
class Served:
    """Every document the app served for the demo: path -> body."""

    atom: dict[str, bytes]
    rss: dict[str, bytes]
    stories: int


def river_queries(storage: Storage) -> list[str]:
    feeds = storage.list_feeds()
    folders = sorted({feed.folder for feed in feeds if feed.folder})
    assert feeds and folders
    queries = ["", "?min_sources=2", "?min_sources=3", "?q=the", "?q=no+such+words+anywhere"]
    queries += [f"?feed={feed.id}" for feed in feeds]
    queries += [f"?folder={folder}" for folder in folders]
    queries.append(f"?min_sources=2&q=the&folder={folders[0]}")
    return queries


def fetch_all_pages(client: FlaskClient, path: str) -> dict[str, bytes]:
    """``path`` and every page after it (following rel="next")."""
    found: dict[str, bytes] = {}
    while path:
        assert len(found) < MAX_PAGES, path
        response = client.get(path)
        assert response.status_code == 200, (path, response.get_data(as_text=True))
        found[path] = response.data
        parsed = feedparser.parse(response.data)
        following = [link.href for link in parsed.feed.get("links", []) if link.rel == "next"]
        path = following[0].removeprefix(BASE) if following else ""
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # Module-scoped (the conftest fixtures are per test): the demo is ingested
    # and walked once for the whole module.
    database = tmp_path_factory.mktemp("demo") / "aggregator.db"
    settings = Settings(
        database_url=f"sqlite:///{database}",
        base_url=BASE,
        feed_max_entries=PAGE_SIZE,
        allow_file_urls=True,
    )
    storage = Storage(settings.database_url)
    storage.ensure_schema(auto_upgrade=True)
    cli.import_opml(storage, cli.demo_dir() / "demo.opml")
    engine = ingest.ClusterEngine(ClusterSettings.from_settings(settings))
    ingest.run_pass(storage, engine, settings, all_feeds=True)
    client = create_app(settings, storage).test_client()
    story_ids = [item.story.id for item in storage.iter_stories()]
    assert len(story_ids) >= 10
    documents: dict[str, dict[str, bytes]] = {"atom": {}, "rss": {}}
    for fmt in ("atom", "rss"):
        for query in river_queries(storage):
            documents[fmt].update(fetch_all_pages(client, f"/feed.{fmt}{query}"))
        for story_id in story_ids:
            documents[fmt].update(fetch_all_pages(client, f"/stories/{story_id}/feed.{fmt}"))
    try:
        yield Served(atom=documents["atom"], rss=documents["rss"], stories=len(story_ids))
    finally:
        storage.close()


def test_the_walk_covers_paged_feeds(served: Served) -> None:
    for documents in (served.atom, served.rss):
        assert any("/feed." in path and "page=" in path for path in documents)  # river pages
        assert any("/stories/" in path and "page=" in path for path in documents)  # story pages
        assert sum(1 for path in documents if "/stories/" in path and "page=" not in path) == served.stories
        assert any("q=" in path for path in documents)
        assert any("folder=" in path for path in documents)
        assert any("feed=" in path for path in documents)


def test_every_served_atom_document_reads_back_complete(served: Served) -> None:
    for path, data in served.atom.items():
        parsed = feedparser.parse(data)
        assert not parsed.bozo, (path, parsed.get("bozo_exception"))
        assert parsed.version == "atom10", path
        feed = parsed.feed
        rels = {link.rel: link for link in feed.links}
        assert rels["self"].href == f"{BASE}{path}", path
        assert rels["alternate"].type == "text/html", path
        assert feed.id.startswith("tag:news.example.org,2026:"), path
        assert feed.updated_parsed, path
        is_story_feed = path.startswith("/stories/")
        for item in parsed.entries:
            assert item.id.startswith("tag:news.example.org,2026:"), (path, item.id)
            assert item.updated_parsed and item.published_parsed, (path, item.id)
            assert item.author, (path, item.id)
            alternates = [link for link in item.links if link.rel == "alternate"]
            assert len(alternates) == 1 and alternates[0].href.startswith("https://"), (path, item.id)
            assert item.content[0].type == "text/html", (path, item.id)
            assert item.content[0].value.strip(), (path, item.id)
            assert "<script" not in item.content[0].value
            if is_story_feed:
                assert item.source.title, (path, item.id)  # the original outlet
                assert not alternates[0].href.startswith(BASE)  # the original article
            else:
                assert item.summary_detail.type == "text/plain", (path, item.id)
                assert alternates[0].href.startswith(f"{BASE}/stories/"), (path, item.id)


def test_every_served_rss_document_reads_back(served: Served) -> None:
    for path, data in served.rss.items():
        parsed = feedparser.parse(data)
        assert not parsed.bozo, (path, parsed.get("bozo_exception"))
        assert parsed.version == "rss20", path
        rels = {link.rel: link.href for link in parsed.feed.links}
        assert rels["self"] == f"{BASE}{path}", path
        assert parsed.feed.link.startswith(BASE), path
        for item in parsed.entries:
            assert item.id.startswith("tag:news.example.org,2026:"), (path, item.id)
            assert item.guidislink is False
            assert item.published_parsed and item.link and item.summary, (path, item.id)
    # The same entries in both formats.
    for path, data in served.atom.items():
        twin = served.rss[path.replace(".atom", ".rss")]
        assert [e.id for e in feedparser.parse(data).entries] == [
            e.id for e in feedparser.parse(twin).entries
        ]


def test_every_served_atom_document_is_valid_rfc4287(served: Served, tmp_path: Path) -> None:
    jing = shutil.which("jing")
    if jing is None:
        pytest.skip("jing is not installed (CI installs it)")
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} is absent (../shared is not beside the checkout)")
    files = []
    for index, (path, data) in enumerate(sorted(served.atom.items())):
        target = tmp_path / f"{index:04d}.atom"
        target.write_bytes(data)
        files.append((target, path))
    # One jing run for all documents: the JVM starts once.
    result = subprocess.run(
        [jing, "-c", str(SCHEMA), *(str(target) for target, _ in files)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    names = {str(target): path for target, path in files}
    report = "\n".join(
        line.replace(line.split(":", 1)[0], names.get(line.split(":", 1)[0], "?"), 1)
        for line in result.stdout.splitlines()[:40]
    )
    assert result.returncode == 0, report
    assert len(files) > 50
