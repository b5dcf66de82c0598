"""The published feeds over HTTP (aggregator.web.atom): conditional GET that
costs no rendering, paging (RFC 5005), the river's filters, RSS 2.0, and
merged stories' redirects. A real SQLite database and the real Flask app.

The world: three outlets in two folders. "storm" is reported by all three, "election" by Alpha only, "harbour" by Gamma
only, and a fourth story ("ferry") was merged into "storm".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import feedparser
import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from aggregator import publish
from aggregator.config import ConfigError, Settings, load
from aggregator.models import ParsedEntry
from aggregator.storage import Storage
from aggregator.storage.facade import StoryFilter
from aggregator.web import create_app

BASE = "https://news.example.org"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ATOM = "application/atom+xml; charset=utf-8"
RSS = "application/rss+xml; charset=utf-8"
TEXT = "text/plain; charset=utf-8"
HOSTILE_HTML = '<p>Calm <b>words</b></p><script>alert(1)</script><img src=x onerror=alert(1)><a href="javascript:alert(1)">x</a>'
FORBIDDEN = ("<script", "onerror", "javascript:")


def entry(
    key: str, title: str, *, published: datetime, summary: str = "Body.", html: str | None = None
) -> ParsedEntry:
    return ParsedEntry(
        key=key,
        title=title,
        link=f"https://{key}.example/article",
        summary=summary,
        content_html=html if html is not None else f"<p>{summary}</p>",
        text=summary,
        author=None,
        published=published,
        updated=published,
        content_hash=hashlib.sha256(f"{key}{title}{summary}{html}".encode()).hexdigest(),
    )


@dataclass
class World:
    storage: Storage
    settings: Settings
    client: FlaskClient
    feeds: dict[str, int]
    storm: int
    election: int
    harbour: int
    ferry: int  # merged into storm

    def client_with(self, **changes: Any) -> FlaskClient:
        return create_app(self.settings.replace(**changes), self.storage).test_client()


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def populate(storage: Storage) -> tuple[dict[str, int], int, int, int, int]:
    feeds = {
        "Alpha": storage.add_feed("https://alpha.example/feed.xml", now=T0, title="Alpha", folder="World").id,
        "Beta": storage.add_feed("https://beta.example/feed.xml", now=T0, title="Beta", folder="World").id,
        "Gamma": storage.add_feed("https://gamma.example/feed.xml", now=T0, title="Gamma", folder="Local").id,
    }
    storage.save_entries(
        feeds["Alpha"],
        [
            entry("a1", "Storm hits the coast", published=at(0)),
            entry("a2", "Election results are in", published=at(0.5)),
        ],
        source="Alpha Times",
        fetched_at=T0,
    )
    storage.save_entries(
        feeds["Beta"],
        [
            entry("b1", "Storm batters the coast", published=at(1), html=HOSTILE_HTML),
            entry("b2", "Ferry cancelled by the storm", published=at(1.5)),
        ],
        source="Beta Post",
        fetched_at=T0,
    )
    storage.save_entries(
        feeds["Gamma"],
        [
            entry("c1", "Storm: the coast counts the damage", published=at(2)),
            entry("c2", "Harbour reopens", published=at(2.5)),
        ],
        source="Gamma Wire",
        fetched_at=T0,
    )
    pending = {article.key: article for article in storage.pending_articles(100)}

    def assign(key: str, story: int | None, hours: float) -> int:
        return storage.assign(
            pending[key], story, score=0.5, signal="similar", copy_of=None, signature=None, now=at(hours)
        )

    with storage.batch():
        storm = assign("a1", None, 3)
        election = assign("a2", None, 3)
        assign("b1", storm, 3)
        ferry = assign("b2", None, 3)
        harbour = assign("c2", None, 3)
        assign("c1", storm, 3)
        storage.merge_stories(storm, [ferry], now=at(4))
    return feeds, storm, election, harbour, ferry


@pytest.fixture
def world(settings: Settings, storage: Storage) -> Iterator[World]:
    settings = settings.replace(base_url=BASE, river_cache_seconds=0, feed_max_entries=10)
    # (river_cache_seconds=0: these tests see what Flask validates at once; the river's
    # micro-cache in front of it is tested in tests/test_river_cache.py)
    feeds, storm, election, harbour, ferry = populate(storage)
    client = create_app(settings, storage).test_client()
    yield World(storage, settings, client, feeds, storm, election, harbour, ferry)


def parse_feed(response: TestResponse, content_type: str = ATOM) -> feedparser.FeedParserDict:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type == content_type
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


def links(parsed: feedparser.FeedParserDict) -> dict[str, str]:
    return {link.rel: link.href for link in parsed.feed.get("links", [])}


FEED_PATHS = (
    "/stories/{storm}/feed.atom",
    "/stories/{storm}/feed.rss",
    "/feed.atom",
    "/feed.rss",
)


def feed_paths(world: World) -> list[str]:
    return [template.format(storm=world.storm) for template in FEED_PATHS]


class RenderCounter:
    """Counts calls of the publish functions the views call (instrumentation:
    the real functions still run)."""

    NAMES = ("story_feed", "story_feed_rss", "stories_feed", "stories_feed_rss")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, storage: Storage) -> None:
        self.calls: dict[str, int] = dict.fromkeys(self.NAMES, 0)
        self.article_reads = 0
        for name in self.NAMES:
            monkeypatch.setattr(publish, name, self._counting(name, getattr(publish, name)))
        real_get_story = storage.get_story

        def get_story(story_id: int) -> Any:
            self.article_reads += 1
            return real_get_story(story_id)

        monkeypatch.setattr(storage, "get_story", get_story)

    def _counting(self, name: str, function: Callable[..., bytes]) -> Callable[..., bytes]:
        def wrapper(*args: Any, **kwargs: Any) -> bytes:
            self.calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    @property
    def renders(self) -> int:
        return sum(self.calls.values())


# --------------------------------------------------------------------------- conditional GET


@pytest.mark.parametrize("template", FEED_PATHS)
def test_feeds_carry_strong_validators_and_cache_control(world: World, template: str) -> None:
    path = template.format(storm=world.storm)
    response = world.client.get(path)
    assert response.status_code == 200
    assert response.content_type == (RSS if path.endswith(".rss") else ATOM)
    etag = response.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")  # strong
    story = world.storage.story_record(world.storm)
    assert story is not None  # the storm is the newest activity, in the river too
    assert parsedate_to_datetime(response.headers["Last-Modified"]) == story.updated_at.replace(microsecond=0)
    assert response.cache_control.public
    assert response.cache_control.max_age == 300
    assert world.client.get(path).headers["ETag"] == etag  # stable while nothing changes


def test_max_age_is_a_setting(world: World) -> None:
    client = world.client_with(feed_max_age=42)
    for path in feed_paths(world):
        assert client.get(path).cache_control.max_age == 42
    assert load(environ={"AGGREGATOR_FEED_MAX_AGE": "0"}).feed_max_age == 0
    assert Settings().feed_max_age == 300
    with pytest.raises(ConfigError, match="feed_max_age"):
        load(environ={"AGGREGATOR_FEED_MAX_AGE": "-1"})


@pytest.mark.parametrize("cache_mb", [0, 64], ids=["no-render-cache", "render-cache"])
@pytest.mark.parametrize("template", FEED_PATHS)
def test_an_unchanged_feed_is_304_without_rendering(
    world: World, template: str, cache_mb: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = template.format(storm=world.storm)
    client = world.client_with(render_cache_mb=cache_mb)
    counter = RenderCounter(monkeypatch, world.storage)
    first = client.get(path)
    assert first.status_code == 200 and counter.renders == 1
    reads_for_one_render = counter.article_reads
    assert reads_for_one_render >= 1

    for headers in (
        {"If-None-Match": first.headers["ETag"]},
        {"If-None-Match": f'"other", {first.headers["ETag"]}'},
        {"If-Modified-Since": first.headers["Last-Modified"]},
    ):
        again = client.get(path, headers=headers)
        assert again.status_code == 304, headers
        assert again.data == b""
        assert again.headers["ETag"] == first.headers["ETag"]  # RFC 9110: same validators on a 304
        assert again.cache_control.max_age == 300
        assert "Content-Type" not in again.headers
    assert counter.renders == 1  # nothing was rendered for the 304s
    assert counter.article_reads == reads_for_one_render  # and no article was read

    stale = client.get(path, headers={"If-None-Match": '"not-the-etag"'})
    assert stale.status_code == 200 and stale.data == first.data
    assert stale.headers["ETag"] == first.headers["ETag"]
    if cache_mb:  # the same validator: the body comes from the render cache
        assert counter.renders == 1
        assert counter.article_reads == reads_for_one_render
    else:  # no cache: rendered again, and only then
        assert counter.renders == 2


def test_a_new_article_changes_the_validators(world: World) -> None:
    paths = feed_paths(world)
    before = {path: world.client.get(path) for path in paths}
    world.storage.save_entries(
        world.feeds["Beta"],
        [entry("b3", "Storm: clean-up begins", published=at(5))],
        source="Beta Post",
        fetched_at=at(5),
    )
    (article,) = world.storage.pending_articles(10)
    world.storage.assign(
        article, world.storm, score=0.6, signal="similar", copy_of=None, signature=None, now=at(6)
    )
    for path in paths:
        old = before[path]
        response = world.client.get(path, headers={"If-None-Match": old.headers["ETag"]})
        assert response.status_code == 200, path
        assert response.headers["ETag"] != old.headers["ETag"]
        assert parsedate_to_datetime(response.headers["Last-Modified"]) == at(6)
        ids = {item.id for item in feedparser.parse(response.data).entries}
        if "/stories/" in path:
            assert publish.article_tag(BASE, article.id) in ids
        # If-Modified-Since with the old date: modified since.
        since = world.client.get(path, headers={"If-Modified-Since": old.headers["Last-Modified"]})
        assert since.status_code == 200


def test_an_article_updated_in_place_changes_the_story_feed(world: World) -> None:
    path = f"/stories/{world.storm}/feed.atom"
    old = world.client.get(path)
    world.storage.save_entries(
        world.feeds["Alpha"],
        [entry("a1", "Storm hits the coast", published=at(0), summary="Now with casualty figures.")],
        source="Alpha Times",
        fetched_at=at(8),
    )
    response = world.client.get(path, headers={"If-None-Match": old.headers["ETag"]})
    assert response.status_code == 200
    assert b"casualty figures" in response.data


def test_validators_differ_between_representations(world: World) -> None:
    paths = [
        *feed_paths(world),
        "/feed.atom?min_sources=2",
        "/feed.atom?q=storm",
        f"/feed.atom?feed={world.feeds['Gamma']}",
        "/feed.atom?folder=World",
    ]
    etags = [world.client.get(path).headers["ETag"] for path in paths]
    assert len(set(etags)) == len(etags)
    paged = world.client_with(feed_max_entries=1)
    assert paged.get("/feed.atom").headers["ETag"] not in etags
    assert paged.get("/feed.atom?page=2").headers["ETag"] != paged.get("/feed.atom").headers["ETag"]
    # Without base_url, the URLs come from the request's host: so does the ETag.
    hostless = world.client_with(base_url=None)
    one = hostless.get("/feed.atom", base_url="http://one.test")
    two = hostless.get("/feed.atom", base_url="http://two.test")
    assert one.headers["ETag"] != two.headers["ETag"]
    assert hostless.get("/feed.atom", base_url="http://one.test").headers["ETag"] == one.headers["ETag"]


def test_head_is_conditional_too(world: World) -> None:
    first = world.client.get("/feed.atom")
    head = world.client.head("/feed.atom", headers={"If-None-Match": first.headers["ETag"]})
    assert head.status_code == 304


# --------------------------------------------------------------------------- merged stories


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_a_merged_storys_feed_redirects_to_the_survivor(world: World, fmt: str) -> None:
    for suffix in ("", "?page=2"):
        response = world.client.get(f"/stories/{world.ferry}/feed.{fmt}{suffix}")
        assert response.status_code == 301
        assert response.headers["Location"] == f"/stories/{world.storm}/feed.{fmt}"
    followed = world.client.get(f"/stories/{world.ferry}/feed.{fmt}", follow_redirects=True)
    parsed = parse_feed(followed, ATOM if fmt == "atom" else RSS)
    ids = {item.id for item in parsed.entries}
    ferry_article = next(
        a
        for a in world.storage.get_story(world.storm).articles
        if a.key == "b2"  # type: ignore[union-attr]
    )
    assert publish.article_tag(BASE, ferry_article.id) in ids  # its articles live on in the survivor


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_unknown_story_and_bad_pages(world: World, fmt: str) -> None:
    missing = world.client.get(f"/stories/999/feed.{fmt}")
    assert missing.status_code == 404 and missing.content_type == TEXT
    for path in (f"/stories/{world.storm}/feed.{fmt}", f"/feed.{fmt}"):
        assert world.client.get(f"{path}?page=2").status_code == 404  # one page only
        assert "no page 2" in world.client.get(f"{path}?page=2").get_data(as_text=True)
        for bad in ("0", "-1", "x", "1.5"):
            response = world.client.get(f"{path}?page={bad}")
            assert response.status_code == 400 and response.content_type == TEXT


# --------------------------------------------------------------------------- paging


def walk(client: FlaskClient, path: str, content_type: str) -> list[feedparser.FeedParserDict]:
    """Every page of a paged feed, following rel="next" from ``path``."""
    pages = [parse_feed(client.get(path), content_type)]
    while "next" in links(pages[-1]):
        assert len(pages) < 50
        pages.append(parse_feed(client.get(links(pages[-1])["next"].removeprefix(BASE)), content_type))
    return pages


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_story_feed_pages(world: World, fmt: str) -> None:
    client = world.client_with(feed_max_entries=2)
    story = world.storage.get_story(world.storm)
    assert story is not None and len(story.articles) == 4
    content_type = ATOM if fmt == "atom" else RSS
    url = f"{BASE}/stories/{world.storm}/feed.{fmt}"
    pages = walk(client, f"/stories/{world.storm}/feed.{fmt}", content_type)
    assert len(pages) == 2
    first, last = links(pages[0]), links(pages[1])
    assert first["self"] == url and first["first"] == url
    assert first["next"] == f"{url}?page=2" and first["last"] == f"{url}?page=2"
    assert "previous" not in first
    assert last["self"] == f"{url}?page=2" and last["previous"] == url and last["first"] == url
    assert "next" not in last
    ids = [item.id for page in pages for item in page.entries]
    newest_first = sorted(story.articles, key=lambda a: (a.published, a.id), reverse=True)
    assert ids == [publish.article_tag(BASE, a.id) for a in newest_first]
    if fmt == "atom":
        assert pages[0].feed.id == pages[1].feed.id  # one logical feed


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_river_pages(world: World, fmt: str) -> None:
    client = world.client_with(feed_max_entries=1)
    content_type = ATOM if fmt == "atom" else RSS
    pages = walk(client, f"/feed.{fmt}?min_sources=1", content_type)  # min_sources=1 is the default
    assert len(pages) == world.storage.find_stories(StoryFilter(), limit=1).total == 3
    ids = [item.id for page in pages for item in page.entries]
    # Latest activity first: harbour's only report is the newest article.
    assert ids == [publish.story_tag(BASE, s) for s in (world.harbour, world.storm, world.election)]
    assert links(pages[0])["self"] == f"{BASE}/feed.{fmt}"  # canonical: defaults left out
    assert links(pages[1])["self"] == f"{BASE}/feed.{fmt}?page=2"
    assert links(pages[2])["last"] == f"{BASE}/feed.{fmt}?page=3"
    if fmt == "atom":
        assert len({page.feed.id for page in pages}) == 1


def test_a_short_feed_has_no_paging_links(world: World) -> None:
    for path in feed_paths(world):
        found = links(parse_feed(world.client.get(path), RSS if path.endswith(".rss") else ATOM))
        assert not {"first", "last", "next", "previous"} & set(found)
        assert "self" in found and "alternate" in found


# --------------------------------------------------------------------------- river filters


def river_ids(client: FlaskClient, query: str) -> list[str]:
    return [item.id for item in parse_feed(client.get(f"/feed.atom{query}")).entries]


def test_river_filters(world: World) -> None:
    tag = lambda story: publish.story_tag(BASE, story)  # noqa: E731
    assert river_ids(world.client, "") == [tag(world.harbour), tag(world.storm), tag(world.election)]
    assert river_ids(world.client, "?min_sources=2") == [tag(world.storm)]
    assert river_ids(world.client, "?q=storm") == [tag(world.storm)]
    assert river_ids(world.client, "?q=HARBOUR") == [tag(world.harbour)]
    assert river_ids(world.client, "?q=nothing+like+this") == []
    assert river_ids(world.client, "?q=%21%21") == []  # punctuation only: nothing matches, no error
    assert river_ids(world.client, f"?feed={world.feeds['Gamma']}") == [tag(world.harbour), tag(world.storm)]
    assert river_ids(world.client, f"?feed={world.feeds['Alpha']}") == [tag(world.storm), tag(world.election)]
    assert river_ids(world.client, "?folder=World") == [tag(world.storm), tag(world.election)]
    assert river_ids(world.client, "?folder=Local") == [tag(world.harbour), tag(world.storm)]
    assert river_ids(world.client, "?folder=Nowhere") == []
    assert river_ids(world.client, "?folder=Local&min_sources=2&q=coast") == [tag(world.storm)]


def test_filtered_river_urls_ids_and_titles(world: World) -> None:
    gamma = world.feeds["Gamma"]
    # Parameters in any order, with blanks: the self link is canonical.
    parsed = parse_feed(
        world.client.get(f"/feed.atom?folder=Local&q=+storm++coast&feed={gamma}&min_sources=2")
    )
    canonical = f"?min_sources=2&q=storm+coast&feed={gamma}&folder=Local"
    assert links(parsed)["self"] == f"{BASE}/feed.atom{canonical}"
    assert links(parsed)["alternate"] == f"{BASE}/{canonical}"  # the HTML river, same filters
    assert parsed.feed.id == f"tag:news.example.org,2026:feed/feed.atom{canonical}"
    assert parsed.feed.title == (
        "aggregator: stories reported by 2+ sources from Gamma in folder Local matching \u201cstorm coast\u201d"
    )
    ids = {parse_feed(world.client.get(f"/feed.atom{q}")).feed.id for q in ("", "?q=storm", "?folder=Local")}
    assert len(ids) == 3
    rss = parse_feed(world.client.get(f"/feed.rss?q=storm&feed={gamma}"), RSS)
    assert links(rss)["self"] == f"{BASE}/feed.rss?q=storm&feed={gamma}"
    assert rss.feed.link == f"{BASE}/?q=storm&feed={gamma}"


def test_river_filter_errors(world: World) -> None:
    for query in ("feed=abc", "feed=0", "min_sources=0", "q=" + "x" * 300, "q=%01"):
        response = world.client.get(f"/feed.atom?{query}")
        assert response.status_code == 400, query
        assert response.content_type == TEXT
    unknown = world.client.get("/feed.rss?feed=999")
    assert unknown.status_code == 404 and "no feed 999" in unknown.get_data(as_text=True)


# --------------------------------------------------------------------------- RSS 2.0


def test_story_rss_has_the_atom_entries(world: World) -> None:
    atom = parse_feed(world.client.get(f"/stories/{world.storm}/feed.atom"))
    response = world.client.get(f"/stories/{world.storm}/feed.rss")
    rss = parse_feed(response, RSS)
    assert rss.version == "rss20"
    assert rss.feed.title == atom.feed.title
    assert rss.feed.link == f"{BASE}/stories/{world.storm}"
    assert links(rss)["self"] == f"{BASE}/stories/{world.storm}/feed.rss"
    assert [item.id for item in rss.entries] == [item.id for item in atom.entries]
    for rss_item, atom_item in zip(rss.entries, atom.entries, strict=True):
        assert rss_item.guidislink is False
        assert rss_item.link == atom_item.link
        assert rss_item.published_parsed == atom_item.published_parsed
        assert rss_item.author == atom_item.author
    raw = response.get_data(as_text=True)
    assert raw.count('<guid isPermaLink="false">tag:news.example.org,2026:article/') == 4
    for needle in FORBIDDEN:
        assert needle not in raw
    beta = next(item for item in rss.entries if item.title == "Storm batters the coast")
    assert "Calm <b>words</b>" in beta.summary  # description: the sanitised HTML
    for needle in FORBIDDEN:
        assert needle not in beta.summary
    story = world.storage.story_record(world.storm)
    assert story is not None
    assert (
        f"<lastBuildDate>{format_datetime(story.updated_at.replace(microsecond=0)).replace('-0000', '+0000')}"
        in raw
    )


def test_river_rss(world: World) -> None:
    rss = parse_feed(world.client.get("/feed.rss?min_sources=2"), RSS)
    assert [item.id for item in rss.entries] == [publish.story_tag(BASE, world.storm)]
    item = rss.entries[0]
    assert item.link == f"{BASE}/stories/{world.storm}"
    assert item.guidislink is False
    assert "4 articles from 3 sources" in item.summary  # the merged story's article included
    assert 'href="https://c1.example/article"' in item.summary
    assert rss.feed.title == "aggregator: stories reported by 2+ sources"


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_first_pages_advertise_the_websub_hub(world: World, fmt: str) -> None:
    """A feed's first page is a WebSub topic: a hub link in the document and a
    ``Link`` header naming the hub and the topic; later pages are not topics."""
    client = world.client_with(feed_max_entries=1, base_url=BASE)
    content_type = ATOM if fmt == "atom" else RSS
    first = client.get(f"/stories/{world.storm}/feed.{fmt}")
    topic = f"{BASE}/stories/{world.storm}/feed.{fmt}"
    assert first.headers["Link"] == f'<{BASE}/websub>; rel="hub", <{topic}>; rel="self"'
    assert links(parse_feed(first, content_type))["hub"] == f"{BASE}/websub"
    again = client.get(f"/stories/{world.storm}/feed.{fmt}", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.headers["Link"] == first.headers["Link"]
    second = client.get(f"/stories/{world.storm}/feed.{fmt}?page=2")
    assert "Link" not in second.headers
    assert "hub" not in links(parse_feed(second, content_type))
    river = client.get(f"/feed.{fmt}?min_sources=2")
    assert river.headers["Link"] == f'<{BASE}/websub>; rel="hub", <{BASE}/feed.{fmt}?min_sources=2>; rel="self"'
