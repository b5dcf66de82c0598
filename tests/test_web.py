"""The web service (aggregator.web) against a real SQLite database.

The world: three outlets; story 1 is reported by all three (one article a
copy), story 2 by one outlet, story 3 carries hostile markup, and story 4 was
merged into story 1.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from aggregator.config import Settings
from aggregator.models import FeedState, ParsedEntry
from aggregator.storage import Storage
from aggregator.web import SECURITY_HEADERS, create_app

BASE = "https://news.example.org"
TOKEN = "s3cret-token"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

HOSTILE_TITLE = "Breaking </title><script>alert(1)</script> news"
HOSTILE_HTML = (
    "<p>Hello <b>world</b></p>"
    "<script>alert(1)</script>"
    "<img src=x onerror=alert(1)>"
    '<a href="javascript:alert(1)">click me</a>'
    "<svg onload=alert(1)><circle r=1></circle></svg>"
    '<iframe src="https://evil.example/"></iframe>'
    '<p style="color:red" onclick="alert(1)">styled</p>'
)
FORBIDDEN = ("<script", "onerror", "javascript:", "<svg", "onload", "onclick", "<iframe", "</title><script>")
HTML = "text/html; charset=utf-8"
APP_SCRIPT = '<script src="/static/app.js" defer></script>'  # progressive enhancement only
ATOM = "application/atom+xml; charset=utf-8"
JSON = "application/json"


def entry(
    key: str,
    title: str,
    *,
    published: datetime,
    link: str | None = None,
    content_html: str = "<p>Body.</p>",
    summary: str = "Body.",
    author: str | None = None,
) -> ParsedEntry:
    return ParsedEntry(
        key=key,
        title=title,
        link=link if link is not None else f"https://{key}.example/article",
        summary=summary,
        content_html=content_html,
        text=summary,
        author=author,
        published=published,
        updated=published,
        content_hash=hashlib.sha256(f"{key}{title}{summary}".encode()).hexdigest(),
    )


@dataclass
class World:
    storage: Storage
    settings: Settings
    app: Flask
    client: FlaskClient
    storm: int  # 3 sources
    election: int  # 1 source
    hostile: int  # 1 source, hostile markup
    merged: int  # merged into storm
    feeds: dict[str, int]


def populate(storage: Storage) -> tuple[int, int, int, int, dict[str, int]]:
    feeds = {
        name: storage.add_feed(f"https://{name.lower()}.example/feed.xml", now=T0, title=name).id
        for name in ("Alpha", "Beta", "Gamma")
    }
    storage.save_entries(
        feeds["Alpha"],
        [
            entry("a1", "Storm hits coast", published=T0),
            entry("a2", "Election results are in", published=T0 + timedelta(minutes=30)),
        ],
        source="Alpha Times",
        fetched_at=T0,
    )
    storage.save_entries(
        feeds["Beta"],
        [
            entry("b1", "Storm batters coast", published=T0 + timedelta(hours=1), author="Jo Reporter"),
            entry(
                "b2",
                HOSTILE_TITLE,
                published=T0 + timedelta(hours=1, minutes=30),
                content_html=HOSTILE_HTML,
                summary="<script>alert(2)</script> summary",
                link="javascript:alert(3)",
            ),
        ],
        source="Beta Post",
        fetched_at=T0,
    )
    storage.save_entries(
        feeds["Gamma"],
        [
            entry("c1", "Storm hits coast", published=T0 + timedelta(hours=2)),
            entry("c2", "Storm: an update", published=T0 + timedelta(hours=3)),
        ],
        source="Gamma Wire",
        fetched_at=T0,
    )
    articles = {article.key: article for article in storage.pending_articles(100)}

    def at(hours: float) -> datetime:
        return T0 + timedelta(hours=hours)

    with storage.batch():  # one transaction, as the clustering pass does
        storm = storage.assign(
            articles["a1"], None, score=0.0, signal="new", copy_of=None, signature=None, now=at(1)
        )
        election = storage.assign(
            articles["a2"], None, score=0.05, signal="new", copy_of=None, signature=None, now=at(2)
        )
        storage.assign(
            articles["b1"], storm, score=0.42, signal="similar", copy_of=None, signature=None, now=at(3)
        )
        hostile = storage.assign(
            articles["b2"], None, score=0.0, signal="new", copy_of=None, signature=None, now=at(4)
        )
        storage.assign(
            articles["c1"],
            storm,
            score=1.0,
            signal="copy",
            copy_of=articles["a1"].id,
            signature=None,
            now=at(5),
        )
        merged = storage.assign(
            articles["c2"], None, score=0.0, signal="new", copy_of=None, signature=None, now=at(6)
        )
        storage.merge_stories(storm, [merged], now=at(7))
    return storm, election, hostile, merged, feeds


def make_settings(tmp_path: Path, **changes: object) -> Settings:
    values: dict[str, object] = {
        "database_url": f"sqlite:///{tmp_path}/t.db",
        "base_url": BASE,
        "api_token": TOKEN,
        "page_size": 2,
        "feed_max_entries": 10,
    }
    values.update(changes)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = make_settings(tmp_path)
    storage = Storage(settings.database_url)
    storage.ensure_schema(auto_upgrade=True)
    storm, election, hostile, merged, feeds = populate(storage)
    app = create_app(settings, storage)
    yield World(storage, settings, app, app.test_client(), storm, election, hostile, merged, feeds)
    storage.close()


def client_with(world: World, **changes: object) -> FlaskClient:
    settings = world.settings.replace(**changes) if changes else world.settings
    return create_app(settings, world.storage).test_client()


def parse_atom(response: TestResponse) -> feedparser.FeedParserDict:
    assert response.status_code == 200
    assert response.content_type == ATOM
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


def assert_security_headers(response: TestResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- every route


@pytest.mark.parametrize(
    ("path", "status", "content_type"),
    [
        ("/", 200, HTML),
        ("/?page=2", 200, HTML),
        ("/?min_sources=2", 200, HTML),
        ("/?order=sources", 200, HTML),
        ("/stories/{storm}", 200, HTML),
        ("/stories/{merged}", 301, None),
        ("/stories/999", 404, HTML),
        ("/stories/{storm}/feed.atom", 200, ATOM),
        ("/stories/{merged}/feed.atom", 301, None),
        ("/stories/999/feed.atom", 404, "text/plain; charset=utf-8"),
        ("/feed.atom", 200, ATOM),
        ("/feed.atom?min_sources=2", 200, ATOM),
        ("/feeds", 200, HTML),
        ("/api/stories", 200, JSON),
        ("/api/stories/{storm}", 200, JSON),
        ("/api/stories/{merged}", 301, None),
        ("/api/stories/999", 404, JSON),
        ("/api/feeds", 200, JSON),
        ("/api/feeds/{alpha}", 200, JSON),
        ("/api/feeds/999", 404, JSON),
        ("/healthz", 200, JSON),
        ("/static/style.css", 200, "text/css; charset=utf-8"),
        ("/no/such/page", 404, HTML),
        ("/api/no/such/thing", 404, JSON),
        ("/?page=0", 400, HTML),
        ("/?page=abc", 400, HTML),
        ("/?order=random", 400, HTML),
        ("/api/stories?min_sources=-1", 400, JSON),
        ("/api/stories?page_size=100000", 400, JSON),
    ],
)
def test_routes_answer_with_status_and_type(
    world: World, path: str, status: int, content_type: str | None
) -> None:
    url = path.format(storm=world.storm, merged=world.merged, alpha=world.feeds["Alpha"])
    response = world.client.get(url)
    assert response.status_code == status, response.data[:500]
    if content_type:
        assert response.content_type == content_type
    assert_security_headers(response)
    if response.status_code >= 400 and content_type == JSON:
        assert isinstance(response.get_json()["error"], str)
    response.close()  # static files are streamed from an open file


def test_wrong_method_answers_in_the_route_format(world: World) -> None:
    response = world.client.post("/api/stories")
    assert response.status_code == 405
    assert response.get_json()["error"]
    assert "GET" in response.headers["Allow"]
    assert world.client.post("/").content_type == HTML


# --------------------------------------------------------------------------- HTML pages


def test_river_lists_stories_with_counts_sources_and_times(world: World) -> None:
    response = world.client.get("/")
    body = response.get_data(as_text=True)
    # storm was merged last, so it has the latest activity and comes first
    assert body.index("Storm hits coast") < body.index(f'href="/stories/{world.hostile}"')
    assert f'href="/stories/{world.storm}"' in body
    assert "Alpha Times, Beta Post, Gamma Wire" in body
    assert '<span class="count-number">3</span>' in body
    assert "4 articles" in body
    assert '<time datetime="2026-03-01T12:00:00Z">' in body  # first seen, UTC ISO
    assert '<time datetime="2026-03-01T15:00:00Z">' in body  # last seen
    assert 'href="/?min_sources=2"' in body  # the filter link
    assert '<link rel="alternate" type="application/atom+xml"' in body
    assert 'href="/feed.atom"' in body
    for landmark in ("<header", "<nav", "<main", "<footer"):
        assert landmark in body
    assert 'href="/static/style.css"' in body


def test_river_pagination(world: World) -> None:
    first = world.client.get("/").get_data(as_text=True)
    second = world.client.get("/?page=2").get_data(as_text=True)
    assert first.count('<li class="story') == 2
    assert second.count('<li class="story') == 1  # 3 live stories, 2 a page
    assert 'rel="next" href="/?page=2"' in first
    assert 'rel="prev" href="/"' in second
    assert "Page 2 of 2" in second
    beyond = world.client.get("/?page=9")
    assert beyond.status_code == 200
    assert "nothing on page 9" in beyond.get_data(as_text=True)


def test_river_min_sources_and_order(world: World) -> None:
    multi = world.client.get("/?min_sources=2").get_data(as_text=True)
    assert multi.count('<li class="story') == 1
    assert "Storm hits coast" in multi
    assert "Election results" not in multi
    assert 'href="/feed.atom?min_sources=2"' in multi  # its own feed
    by_sources = world.client.get("/?order=sources").get_data(as_text=True)
    first_link = by_sources.index('<h2 id="story-')
    assert by_sources[first_link:].startswith(f'<h2 id="story-{world.storm}"')
    assert (
        'href="/?order=sources&amp;page=2"' in by_sources or 'href="/?page=2&amp;order=sources"' in by_sources
    )
    none = world.client.get("/?min_sources=5").get_data(as_text=True)
    assert "No story has been reported by 5 or more sources yet" in none


def test_story_page_shows_every_article(world: World) -> None:
    response = world.client.get(f"/stories/{world.storm}")
    body = response.get_data(as_text=True)
    for title in ("Storm hits coast", "Storm batters coast", "Storm: an update"):
        assert title in body
    for source in ("Alpha Times", "Beta Post", "Gamma Wire"):
        assert source in body
    assert 'href="https://a1.example/article" rel="noopener noreferrer nofollow"' in body
    assert "Jo Reporter" in body
    assert "similar text, score 0.42" in body  # why it joined
    assert "copy of article #" in body
    assert '<time datetime="2026-03-01T13:00:00Z">' in body
    assert f'href="/stories/{world.storm}/feed.atom"' in body
    assert body.count('rel="alternate" type="application/atom+xml"') == 2


def test_merged_story_redirects_to_the_survivor(world: World) -> None:
    for path, target in (
        (f"/stories/{world.merged}", f"/stories/{world.storm}"),
        (f"/stories/{world.merged}/feed.atom", f"/stories/{world.storm}/feed.atom"),
        (f"/api/stories/{world.merged}", f"/api/stories/{world.storm}"),
    ):
        response = world.client.get(path)
        assert response.status_code == 301
        assert response.headers["Location"].endswith(target)
        assert world.client.get(path, follow_redirects=True).status_code == 200


def test_unknown_story_is_a_404_page(world: World) -> None:
    response = world.client.get("/stories/424242")
    assert response.status_code == 404
    body = response.get_data(as_text=True)
    assert "There is no story 424242." in body
    assert "Traceback" not in body


def test_feeds_page_lists_subscriptions_with_status(world: World) -> None:
    world.storage.save_feed_state(
        world.feeds["Beta"],
        replace_state(world, error="HTTP 500 from server <b>oops</b>"),
    )
    body = world.client.get("/feeds").get_data(as_text=True)
    for name in ("Alpha", "Beta", "Gamma"):
        assert name in body
    assert "https://alpha.example/feed.xml" in body
    assert "1 error" in body
    assert "HTTP 500 from server &lt;b&gt;oops&lt;/b&gt;" in body
    assert '<link rel="alternate" type="application/atom+xml"' in body


def replace_state(world: World, *, error: str | None) -> FeedState:
    return FeedState(
        etag=None,
        last_modified=None,
        last_fetched_at=T0 + timedelta(hours=8),
        last_success_at=None,
        next_check_at=T0 + timedelta(hours=9),
        error_count=1 if error else 0,
        last_error=error,
    )


def test_pages_have_no_inline_script_or_style(world: World) -> None:
    for path in ("/", f"/stories/{world.storm}", f"/stories/{world.hostile}", "/feeds", "/missing"):
        body = world.client.get(path).get_data(as_text=True)
        assert body.count(APP_SCRIPT) == 1  # the one external, same-origin script
        body = body.replace(APP_SCRIPT, "")
        assert "<script" not in body
        assert "<style" not in body
        assert " style=" not in body
        assert " on" + "click=" not in body


# --------------------------------------------------------------------------- hostile content


def test_hostile_content_never_reaches_html_unescaped(world: World) -> None:
    for path in ("/", f"/stories/{world.hostile}", "/?page=2"):
        body = world.client.get(path).get_data(as_text=True).replace(APP_SCRIPT, "")
        for needle in FORBIDDEN:
            assert needle not in body, (path, needle)
    story = world.client.get(f"/stories/{world.hostile}").get_data(as_text=True)
    assert "&lt;/title&gt;&lt;script&gt;alert(1)&lt;/script&gt; news" in story  # escaped, visible
    assert "Hello <b>world</b>" in story  # sanitised content is shown as HTML
    assert "&lt;script&gt;alert(2)&lt;/script&gt; summary" in story  # summary is text


def test_hostile_content_never_reaches_atom_unescaped(world: World) -> None:
    for path in (f"/stories/{world.hostile}/feed.atom", "/feed.atom"):
        response = world.client.get(path)
        raw = response.get_data(as_text=True)
        for needle in FORBIDDEN:
            assert needle not in raw, (path, needle)
        parsed = parse_atom(response)
        for item in parsed.entries:
            for content in item.get("content", []):
                for needle in FORBIDDEN:
                    assert needle not in content.value, (path, needle)
            assert item.title_detail.type == "text/plain"


# --------------------------------------------------------------------------- Atom


def test_story_feed_is_stable_and_dated_by_the_story(world: World) -> None:
    path = f"/stories/{world.storm}/feed.atom"
    first = world.client.get(path)
    second = world.client.get(path)
    assert first.data == second.data  # byte-identical for an unchanged story
    parsed = parse_atom(first)
    story = world.storage.get_story(world.storm)
    assert story is not None
    assert parsed.feed.id == f"tag:news.example.org,2026:story/{world.storm}/feed"
    assert parsed.feed.updated == story.story.updated_at.isoformat()
    assert next(link.href for link in parsed.feed.links if link.rel == "self") == f"{BASE}{path}"
    ids = [item.id for item in parsed.entries]
    assert ids == [f"tag:news.example.org,2026:article/{a.id}" for a in reversed(story.articles)]
    assert [item.id for item in parse_atom(second).entries] == ids


def test_story_feed_answers_conditional_requests(world: World) -> None:
    path = f"/stories/{world.storm}/feed.atom"
    first = world.client.get(path)
    assert first.headers["ETag"]
    assert first.headers["Last-Modified"]
    again = world.client.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""


def test_river_feed_has_one_entry_per_story(world: World) -> None:
    parsed = parse_atom(world.client.get("/feed.atom"))
    ids = [item.id for item in parsed.entries]
    assert len(ids) == len(set(ids)) == world.storage.count_stories() == 3
    assert ids[0] == f"tag:news.example.org,2026:story/{world.storm}"
    assert f"tag:news.example.org,2026:story/{world.merged}" not in ids
    storm = parsed.entries[0]
    story = world.storage.get_story(world.storm)
    assert story is not None
    assert storm.updated == story.story.updated_at.isoformat()
    assert storm.link == f"{BASE}/stories/{world.storm}"
    assert "4 articles from 3 sources" in storm.summary
    assert parsed.feed.updated == story.story.updated_at.isoformat()  # newest story's time
    assert next(link.href for link in parsed.feed.links if link.rel == "self") == f"{BASE}/feed.atom"


def test_river_feed_filters_and_caps(world: World) -> None:
    multi = parse_atom(world.client.get("/feed.atom?min_sources=2"))
    assert [item.id for item in multi.entries] == [f"tag:news.example.org,2026:story/{world.storm}"]
    assert (
        next(link.href for link in multi.feed.links if link.rel == "self")
        == f"{BASE}/feed.atom?min_sources=2"
    )
    assert multi.feed.id != parse_atom(world.client.get("/feed.atom")).feed.id
    capped = parse_atom(client_with(world, feed_max_entries=1).get("/feed.atom"))
    assert len(capped.entries) == 1


def test_base_url_falls_back_to_the_request(world: World) -> None:
    client = client_with(world, base_url=None)
    parsed = parse_atom(client.get(f"/stories/{world.storm}/feed.atom", base_url="http://reader.test:8080"))
    assert parsed.feed.id == f"tag:reader.test,2026:story/{world.storm}/feed"
    assert next(link.href for link in parsed.feed.links if link.rel == "self") == (
        f"http://reader.test:8080/stories/{world.storm}/feed.atom"
    )
    api = client.get("/api/stories", base_url="http://reader.test:8080").get_json()
    assert api["items"][0]["links"]["html"].startswith("http://reader.test:8080/stories/")


# --------------------------------------------------------------------------- JSON reads


def test_api_stories_pages_and_filters(world: World) -> None:
    data = world.client.get("/api/stories").get_json()
    assert data["total"] == 3
    assert data["page"] == 1 and data["page_size"] == 2 and data["pages"] == 2
    assert len(data["items"]) == 2
    first = data["items"][0]
    assert first["id"] == world.storm
    assert first["headline"] == "Storm hits coast"
    assert first["article_count"] == 4
    assert first["source_count"] == 3
    assert first["sources"] == ["Alpha Times", "Beta Post", "Gamma Wire"]
    assert first["first_published"] == "2026-03-01T12:00:00Z"
    assert first["last_published"] == "2026-03-01T15:00:00Z"
    for key in ("created_at", "updated_at"):
        assert datetime.fromisoformat(first[key]).tzinfo is not None
    assert first["links"] == {
        "html": f"{BASE}/stories/{world.storm}",
        "atom": f"{BASE}/stories/{world.storm}/feed.atom",
        "rss": f"{BASE}/stories/{world.storm}/feed.rss",
        "api": f"{BASE}/api/stories/{world.storm}",
    }
    second = world.client.get("/api/stories?page=2").get_json()
    assert len(second["items"]) == 1
    ids = {item["id"] for item in data["items"]} | {item["id"] for item in second["items"]}
    assert ids == {world.storm, world.election, world.hostile}
    multi = world.client.get("/api/stories?min_sources=2").get_json()
    assert multi["total"] == 1 and multi["min_sources"] == 2
    big = world.client.get("/api/stories?page_size=50&order=sources").get_json()
    assert len(big["items"]) == 3 and big["items"][0]["id"] == world.storm


def test_api_story_has_its_articles(world: World) -> None:
    data = world.client.get(f"/api/stories/{world.storm}").get_json()
    assert data["id"] == world.storm
    articles = data["articles"]
    assert [a["source"] for a in articles] == ["Alpha Times", "Beta Post", "Gamma Wire", "Gamma Wire"]
    first, beta, copy = articles[0], articles[1], articles[2]
    assert set(first) >= {
        "id",
        "url",
        "title",
        "source",
        "published",
        "updated",
        "summary",
        "score",
        "signal",
        "copy_of",
    }
    assert first["url"] == "https://a1.example/article"
    assert first["published"] == "2026-03-01T12:00:00Z"
    assert beta["signal"] == "similar" and beta["score"] == pytest.approx(0.42)
    assert copy["signal"] == "copy" and copy["copy_of"] == first["id"]


def test_api_feeds_reports_status(world: World) -> None:
    data = world.client.get("/api/feeds").get_json()
    assert data["total"] == 3
    alpha = data["items"][0]
    assert alpha["url"] == "https://alpha.example/feed.xml"
    assert alpha["title"] == "Alpha"
    assert alpha["article_count"] == 2
    assert alpha["next_check_at"] == "2026-03-01T12:00:00Z"
    for key in ("id", "folder", "last_fetched_at", "last_success_at", "error_count", "last_error"):
        assert key in alpha


# --------------------------------------------------------------------------- JSON writes


def test_write_endpoints_are_off_without_a_token(world: World) -> None:
    client = client_with(world, api_token=None)
    for response in (
        client.post("/api/feeds", json={"url": "https://new.example/feed"}, headers=auth()),
        client.delete(f"/api/feeds/{world.feeds['Alpha']}", headers=auth()),
    ):
        assert response.status_code == 403
        assert response.get_json() == {"error": "write endpoints are disabled: set AGGREGATOR_API_TOKEN"}
    assert world.storage.get_feed(world.feeds["Alpha"]) is not None


@pytest.mark.parametrize(
    "headers",
    [{}, auth("wrong"), {"Authorization": TOKEN}, {"Authorization": f"Basic {TOKEN}"}, auth("s3cret-tokén")],
)
def test_write_endpoints_refuse_a_wrong_token(world: World, headers: dict[str, str]) -> None:
    response = world.client.post("/api/feeds", json={"url": "https://new.example/feed"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in response.get_json()
    assert world.client.delete(f"/api/feeds/{world.feeds['Alpha']}", headers=headers).status_code == 401
    assert world.storage.get_feed_by_url("https://new.example/feed") is None
    assert world.storage.get_feed(world.feeds["Alpha"]) is not None


def test_adding_a_feed(world: World) -> None:
    response = world.client.post(
        "/api/feeds", json={"url": " https://new.example/feed.xml ", "folder": "World"}, headers=auth()
    )
    assert response.status_code == 201, response.get_json()
    data = response.get_json()
    assert data["url"] == "https://new.example/feed.xml"
    assert data["folder"] == "World"
    assert response.headers["Location"] == f"/api/feeds/{data['id']}"
    stored = world.storage.get_feed(data["id"])
    assert stored is not None and stored.url == "https://new.example/feed.xml"
    assert world.client.get(response.headers["Location"]).get_json()["id"] == data["id"]
    again = world.client.post("/api/feeds", json={"url": "https://new.example/feed.xml"}, headers=auth())
    assert again.status_code == 409
    assert "already subscribed" in again.get_json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {"url": "file:///etc/passwd"},
        {"url": "/etc/passwd"},
        {"url": "javascript:alert(1)"},
        {"url": "ftp://files.example/feed"},
        {"url": "https://"},
        {"url": "https://user:pw@host.example/feed"},
        {"url": "https://bad host.example/feed"},
        {"url": "https://host.example:99999/feed"},
        {"url": "https://host.example/" + "a" * 3000},
        {"url": ""},
        {"url": 42},
        {},
        {"url": "https://ok.example/feed", "folder": 7},
        ["https://ok.example/feed"],
    ],
)
def test_adding_a_bad_url_is_a_400(world: World, body: object) -> None:
    response = world.client.post("/api/feeds", json=body, headers=auth())
    assert response.status_code == 400
    assert response.content_type == JSON
    assert response.get_json()["error"]
    assert len(world.storage.list_feeds()) == 3


def test_adding_needs_a_json_body(world: World) -> None:
    response = world.client.post("/api/feeds", data="url=https://x.example/", headers=auth())
    assert response.status_code == 400
    assert "JSON" in response.get_json()["error"]
    huge = world.client.post(
        "/api/feeds", json={"url": "https://x.example/", "pad": "x" * 70_000}, headers=auth()
    )
    assert huge.status_code == 413
    assert huge.get_json()["error"]


def test_local_file_error_message_is_clear(world: World) -> None:
    response = world.client.post("/api/feeds", json={"url": "file:///etc/passwd"}, headers=auth())
    assert "http:// or https://" in response.get_json()["error"]


def test_removing_a_feed(world: World) -> None:
    feed_id = world.feeds["Gamma"]
    response = world.client.delete(f"/api/feeds/{feed_id}", headers=auth())
    assert response.status_code == 204
    assert world.storage.get_feed(feed_id) is None
    assert world.client.delete(f"/api/feeds/{feed_id}", headers=auth()).status_code == 404
    # its articles and stories stay
    assert world.client.get(f"/stories/{world.storm}").status_code == 200


# --------------------------------------------------------------------------- health and outages


def test_healthz_ok(world: World) -> None:
    response = world.client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


OUTAGE_ROUTES = [
    ("/", HTML),
    ("/stories/1", HTML),
    ("/feeds", HTML),
    ("/feed.atom", "text/plain; charset=utf-8"),
    ("/stories/1/feed.atom", "text/plain; charset=utf-8"),
    ("/api/stories", JSON),
    ("/api/stories/1", JSON),
    ("/api/feeds", JSON),
]


def assert_unavailable(client: FlaskClient) -> None:
    for path, content_type in OUTAGE_ROUTES:
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.content_type == content_type, path
        assert response.headers["Retry-After"].isdigit()
        assert_security_headers(response)
        assert "Traceback" not in response.get_data(as_text=True)
        if content_type == JSON:
            assert response.get_json()["error"]
    assert client.get("/healthz").status_code == 200  # liveness: the process answers
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "unavailable"
    assert "database unavailable" in ready.get_json()["checks"]["database"]
    assert ready.headers["Retry-After"]
    write = client.post("/api/feeds", json={"url": "https://x.example/feed"}, headers=auth())
    assert write.status_code == 503 and write.content_type == JSON


def test_unreachable_database_is_a_503(tmp_path: Path) -> None:
    # The database "file" is a directory: SQLite cannot open it.
    (tmp_path / "t.db").mkdir()
    settings = make_settings(tmp_path)
    storage = Storage(settings.database_url)
    try:
        assert_unavailable(create_app(settings, storage).test_client())
    finally:
        storage.close()


def test_database_lost_while_running_is_a_503(world: World, tmp_path: Path) -> None:
    assert world.client.get("/healthz").status_code == 200
    world.storage.close()  # drop pooled connections, then take the file away
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"t.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "t.db").mkdir()
    assert_unavailable(world.client)
    (tmp_path / "t.db").rmdir()


# --------------------------------------------------------------------------- the factory


def test_create_app_builds_storage_from_settings(world: World, tmp_path: Path) -> None:
    app = create_app(world.settings)
    context = app.extensions["aggregator"]
    assert context.settings is world.settings
    assert context.storage is not world.storage
    assert context.storage.url == world.settings.database_url
    response = app.test_client().get("/api/stories")
    assert response.get_json()["total"] == 3
    context.storage.close()
    assert world.app.extensions["aggregator"].storage is world.storage


def test_importing_the_web_package_builds_nothing() -> None:
    code = (
        "import sys, aggregator.web as web; "
        "assert 'datasketch' not in sys.modules, 'datasketch'; "
        "assert 'feedgen' not in sys.modules, 'feedgen'; "
        "assert not hasattr(web, 'app')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_templates_autoescape_everything(world: World) -> None:
    assert world.app.jinja_env.autoescape is True
    assert world.app.config["MAX_CONTENT_LENGTH"] == 64 * 1024


@pytest.mark.skipif(shutil.which("jing") is None, reason="jing not installed")
def test_served_feeds_validate(world: World, tmp_path: Path) -> None:
    schema = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "atom.rnc"
    if not schema.exists():
        pytest.skip("atom.rnc not available")
    for index, path in enumerate(
        ("/feed.atom", f"/stories/{world.storm}/feed.atom", f"/stories/{world.hostile}/feed.atom")
    ):
        target = tmp_path / f"{index}.atom"
        target.write_bytes(world.client.get(path).data)
        result = subprocess.run(
            ["jing", "-c", str(schema), str(target)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, (path, result.stdout)


def test_an_unexpected_error_is_a_calm_500(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    storage = Storage(settings.database_url)
    storage.ensure_schema(auto_upgrade=True)
    app = create_app(settings, storage)

    def boom() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", "boom", boom)
    app.add_url_rule("/api/boom", "api_boom", boom)
    client = app.test_client()
    page = client.get("/boom")
    assert page.status_code == 500 and page.content_type == HTML
    assert "secret internals" not in page.get_data(as_text=True)
    assert_security_headers(page)
    api = client.get("/api/boom")
    assert api.status_code == 500
    assert api.get_json() == {"error": "Something went wrong on our side."}
    storage.close()
