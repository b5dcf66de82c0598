"""Atom rendering (aggregator.publish): pure functions, tested on in-memory records.

Every feed is parsed back with feedparser (and validated against RFC 4287's
RELAX NG grammar with jing when it is installed).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from lxml import etree

from aggregator import publish
from aggregator.models import Article, Story, StoryWithArticles

BASE = "https://news.example.org"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = Path(__file__).resolve().parents[2] / "shared" / "schemas" / "atom.rnc"

HOSTILE_HTML = (
    "<p>Hello <b>world</b></p>"
    "<script>alert(1)</script>"
    "<img src=x onerror=alert(1)>"
    '<a href="javascript:alert(1)">click me</a>'
    "<svg onload=alert(1)><circle r=1></circle></svg>"
    '<iframe src="https://evil.example/"></iframe>'
    '<p style="color:red" onclick="alert(1)">styled</p>'
)
HOSTILE_TITLE = "Breaking </title><script>alert(1)</script> news"
FORBIDDEN = ("<script", "onerror", "javascript:", "<svg", "onload", "onclick", "<iframe")


def make_article(
    article_id: int,
    *,
    title: str = "A title",
    source: str | None = "Alpha Times",
    url: str | None = None,
    published: datetime = T0,
    updated: datetime | None = None,
    content_html: str = "<p>Body text.</p>",
    summary: str = "Body text.",
    author: str | None = None,
    story_id: int = 1,
    signal: str | None = "new",
    score: float | None = 0.0,
    copy_of: int | None = None,
) -> Article:
    return Article(
        id=article_id,
        feed_id=1,
        key=f"key-{article_id}",
        url=url if url is not None else f"https://alpha.example/news/{article_id}",
        title=title,
        summary=summary,
        content_html=content_html,
        text=summary,
        author=author,
        source=source,
        published=published,
        updated=updated or published,
        fetched_at=published,
        content_hash=f"hash-{article_id}",
        story_id=story_id,
        score=score,
        signal=signal,
        copy_of=copy_of,
    )


def make_story(
    story_id: int, articles: list[Article], *, updated_at: datetime | None = None
) -> StoryWithArticles:
    articles = sorted(articles, key=lambda a: (a.published, a.id))
    sources = tuple(dict.fromkeys(a.source for a in articles if a.source))
    return StoryWithArticles(
        story=Story(
            id=story_id,
            headline=articles[0].title if articles else "",
            created_at=T0,
            updated_at=updated_at or T0 + timedelta(hours=5, microseconds=123456),
            first_published=articles[0].published if articles else T0,
            last_published=articles[-1].published if articles else T0,
            article_count=len(articles),
            source_count=len(sources),
            sources=sources,
        ),
        articles=tuple(articles),
    )


@pytest.fixture
def storm() -> StoryWithArticles:
    return make_story(
        7,
        [
            make_article(1, title="Storm hits coast", source="Alpha Times", published=T0),
            make_article(
                2,
                title="Storm batters coast",
                source="Beta Post",
                author="Jo Reporter",
                url="https://beta.example/storm",
                published=T0 + timedelta(hours=1),
                updated=T0 + timedelta(hours=2),
            ),
            make_article(
                3,
                title="Storm hits coast",
                source="Gamma Wire",
                url="https://gamma.example/storm",
                published=T0 + timedelta(hours=3),
                signal="copy",
                score=1.0,
                copy_of=1,
            ),
        ],
    )


def parse(data: bytes) -> feedparser.FeedParserDict:
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    return parsed


def self_link(parsed: feedparser.FeedParserDict) -> str:
    return str(next(link.href for link in parsed.feed.links if link.rel == "self"))


# --------------------------------------------------------------------------- story_feed


def test_story_feed_round_trips_through_feedparser(storm: StoryWithArticles) -> None:
    data = publish.story_feed(storm, base_url=BASE, max_entries=50)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    parsed = parse(data)
    feed = parsed.feed
    assert parsed.version == "atom10"
    assert feed.id == "tag:news.example.org,2026:story/7/feed"
    assert feed.title == "Storm hits coast"
    assert feed.updated == storm.story.updated_at.isoformat()
    assert self_link(parsed) == f"{BASE}/stories/7/feed.atom"
    alternate = next(link for link in feed.links if link.rel == "alternate")
    assert alternate.href == f"{BASE}/stories/7"
    assert alternate.type == "text/html"
    assert feed.generator == "aggregator"
    assert feed.author == "aggregator"
    assert "3 articles from 3 sources" in feed.subtitle


def test_story_feed_entries_newest_first_with_article_fields(storm: StoryWithArticles) -> None:
    parsed = parse(publish.story_feed(storm, base_url=BASE, max_entries=50))
    ids = [entry.id for entry in parsed.entries]
    assert ids == [f"tag:news.example.org,2026:article/{n}" for n in (3, 2, 1)]
    beta = parsed.entries[1]
    assert beta.title == "Storm batters coast"
    assert beta.link == "https://beta.example/storm"
    assert beta.published == (T0 + timedelta(hours=1)).isoformat()
    assert beta.updated == (T0 + timedelta(hours=2)).isoformat()
    assert beta.author == "Jo Reporter"  # the article's own author wins
    assert beta.source.title == "Beta Post"  # <source> names the outlet
    assert beta.content[0].type == "text/html"
    assert "<p>Body text.</p>" in beta.content[0].value
    assert beta.summary == "Body text."
    gamma = parsed.entries[0]
    assert gamma.author == "Gamma Wire"  # no author: the outlet


def test_story_feed_is_byte_identical_across_renders(storm: StoryWithArticles) -> None:
    first = publish.story_feed(storm, base_url=BASE, max_entries=50)
    second = publish.story_feed(storm, base_url=BASE + "/", max_entries=50)
    assert first == second


def test_story_feed_changes_only_when_the_story_does(storm: StoryWithArticles) -> None:
    before = parse(publish.story_feed(storm, base_url=BASE, max_entries=50))
    later = T0 + timedelta(hours=9)
    grown = make_story(
        7,
        [*storm.articles, make_article(4, source="Delta", published=T0 + timedelta(hours=8))],
        updated_at=later,
    )
    after = parse(publish.story_feed(grown, base_url=BASE, max_entries=50))
    assert after.feed.id == before.feed.id
    assert after.feed.updated == later.isoformat()
    assert [e.id for e in after.entries][1:] == [e.id for e in before.entries]


def test_story_feed_keeps_the_newest_max_entries(storm: StoryWithArticles) -> None:
    parsed = parse(publish.story_feed(storm, base_url=BASE, max_entries=2))
    assert [entry.id.rsplit("/", 1)[1] for entry in parsed.entries] == ["3", "2"]


def test_tag_ids_use_the_host_of_base_url() -> None:
    assert publish.story_tag("https://News.Example.org:8443/sub/", 5) == "tag:news.example.org,2026:story/5"
    assert publish.article_tag("http://127.0.0.1:8080", 9) == "tag:127.0.0.1,2026:article/9"
    assert publish.feed_tag(BASE, f"{BASE}/feed.atom?min_sources=2") == (
        "tag:news.example.org,2026:feed/feed.atom?min_sources=2"
    )


def test_hostile_content_is_sanitised_in_story_feed() -> None:
    story = make_story(
        3,
        [
            make_article(
                10,
                title=HOSTILE_TITLE,
                content_html=HOSTILE_HTML,
                summary="<script>alert(2)</script> plain summary",
                author="<b>Mallory</b>",
                url="https://evil.example/a",
            )
        ],
    )
    data = publish.story_feed(story, base_url=BASE, max_entries=50)
    raw = data.decode("utf-8")
    for needle in FORBIDDEN:
        assert needle not in raw, needle
    assert "</title><script>" not in raw
    assert "&lt;/title&gt;&lt;script&gt;" in raw  # the title survives, escaped
    parsed = parse(data)
    entry = parsed.entries[0]
    content = entry.content[0].value
    for needle in FORBIDDEN:
        assert needle not in content, needle
    assert "Hello <b>world</b>" in content
    assert "styled" in content and "style=" not in content
    # Titles and summaries are text constructs: consumers get text, not markup.
    assert entry.title_detail.type == "text/plain"
    assert entry.title == HOSTILE_TITLE
    assert entry.summary_detail.type == "text/plain"
    assert parsed.feed.title_detail.type == "text/plain"


def test_only_http_urls_become_links() -> None:
    story = make_story(
        4, [make_article(11, url="javascript:alert(1)"), make_article(12, url="file:///etc/passwd")]
    )
    data = publish.story_feed(story, base_url=BASE, max_entries=50)
    assert b"javascript:" not in data
    assert b"file:" not in data
    parsed = parse(data)
    for entry in parsed.entries:
        assert not [link for link in entry.get("links", []) if link.rel == "alternate"]
        assert entry.content[0].value  # content stands in for the missing link


def test_control_characters_are_stripped() -> None:
    story = make_story(
        5,
        [
            make_article(
                13,
                title="Bad\x00 \x0bchars\x1f here\ufffe",
                summary="sum\x08mary",
                content_html="<p>con\x01tent</p>",
                source="Out\x0clet",
            )
        ],
    )
    for data in (
        publish.story_feed(story, base_url=BASE, max_entries=50),
        publish.stories_feed([story], base_url=BASE, title="T\x00", self_url=f"{BASE}/feed.atom", updated=T0),
    ):
        etree.fromstring(data)  # well-formed XML 1.0
        parsed = parse(data)
        assert "\x00" not in parsed.entries[0].title
    entry = parse(publish.story_feed(story, base_url=BASE, max_entries=50)).entries[0]
    assert entry.title == "Bad chars here"
    assert entry.summary == "summary"
    assert entry.author == "Outlet"


def test_untitled_and_empty_articles_still_make_valid_entries() -> None:
    story = make_story(6, [make_article(14, title="", content_html="", summary="", url="")])
    parsed = parse(publish.story_feed(story, base_url=BASE, max_entries=50))
    assert parsed.feed.title == publish.UNTITLED
    assert parsed.entries[0].title == publish.UNTITLED
    assert parsed.entries[0].content[0].value


def test_empty_story_feed_is_valid(storm: StoryWithArticles) -> None:
    empty = StoryWithArticles(story=storm.story, articles=())
    parsed = parse(publish.story_feed(empty, base_url=BASE, max_entries=50))
    assert parsed.entries == []


# --------------------------------------------------------------------------- stories_feed


def river(storm: StoryWithArticles) -> list[StoryWithArticles]:
    lone = make_story(
        8,
        [make_article(20, title="Election results", source="Alpha Times", story_id=8)],
        updated_at=T0 + timedelta(hours=1),
    )
    return [storm, lone]


def test_stories_feed_has_one_entry_per_story(storm: StoryWithArticles) -> None:
    stories = river(storm)
    updated = max(item.story.updated_at for item in stories)
    data = publish.stories_feed(
        stories, base_url=BASE, title="All stories", self_url=f"{BASE}/feed.atom", updated=updated
    )
    parsed = parse(data)
    assert parsed.feed.id == "tag:news.example.org,2026:feed/feed.atom"
    assert parsed.feed.title == "All stories"
    assert parsed.feed.updated == updated.isoformat()
    assert self_link(parsed) == f"{BASE}/feed.atom"
    assert [entry.id for entry in parsed.entries] == [
        "tag:news.example.org,2026:story/7",
        "tag:news.example.org,2026:story/8",
    ]
    first = parsed.entries[0]
    assert first.title == "Storm hits coast"
    assert first.link == f"{BASE}/stories/7"
    assert first.updated == storm.story.updated_at.isoformat()
    assert first.summary == "3 articles from 3 sources: Alpha Times, Beta Post, Gamma Wire"
    content = first.content[0].value
    for article in storm.articles:
        assert f'href="{article.url}"' in content
        assert article.source is not None and article.source in content
    assert [author.name for author in first.authors] == ["Alpha Times", "Beta Post", "Gamma Wire"]


@pytest.mark.parametrize("count", [1, 10, 11, 200])
def test_a_river_entry_lists_the_first_and_latest_articles_of_a_big_story(count: int) -> None:
    articles = [
        make_article(i, title=f"Report {i}", source=f"Outlet {i}", published=T0 + timedelta(minutes=i))
        for i in range(1, count + 1)
    ]
    story = make_story(9, articles)
    data = publish.stories_feed(
        [story], base_url=BASE, title="All stories", self_url=f"{BASE}/feed.atom", updated=T0
    )
    content = parse(data).entries[0].content[0].value
    listed = [i for i in range(1, count + 1) if f'href="https://alpha.example/news/{i}"' in content]
    first, latest = publish.ENTRY_FIRST_ARTICLES, publish.ENTRY_LATEST_ARTICLES
    if count <= first + latest:
        assert listed == list(range(1, count + 1)) and "more article" not in content
    else:
        # the originals and what moved the entry; the rest counted, linked to the story page
        assert listed == [*range(1, first + 1), *range(count - latest + 1, count + 1)]
        hidden = count - first - latest
        more = "1 more article" if hidden == 1 else f"{hidden} more articles"
        assert re.search(rf'<li><a href="{BASE}/stories/9"[^>]*>… {more} …</a></li>', content), content
        assert content.index("Report 3<") < content.index(more) < content.index(f"Report {count - latest + 1}<")
    assert f"{count} article" in parse(data).entries[0].summary  # the summary still counts them all


def test_stories_feed_is_deterministic(storm: StoryWithArticles) -> None:
    def render() -> bytes:
        return publish.stories_feed(
            river(storm), base_url=BASE, title="All", self_url=f"{BASE}/feed.atom", updated=T0
        )

    assert render() == render()


def test_stories_feed_escapes_hostile_stories() -> None:
    story = make_story(
        9, [make_article(30, title=HOSTILE_TITLE, content_html=HOSTILE_HTML, url="javascript:x")]
    )
    data = publish.stories_feed([story], base_url=BASE, title="All", self_url=f"{BASE}/feed.atom", updated=T0)
    raw = data.decode()
    for needle in FORBIDDEN:
        assert needle not in raw, needle
    content = parse(data).entries[0].content[0].value
    for needle in FORBIDDEN:
        assert needle not in content, needle
    assert "&lt;/title&gt;&lt;script&gt;" in content  # the title, as text inside the HTML


def test_empty_river_is_valid() -> None:
    parsed = parse(
        publish.stories_feed([], base_url=BASE, title="All", self_url=f"{BASE}/feed.atom", updated=T0)
    )
    assert parsed.entries == []


# --------------------------------------------------------------------------- schema and boundaries


@pytest.mark.skipif(
    shutil.which("jing") is None or not SCHEMA.exists(), reason="jing or atom.rnc not available"
)
def test_feeds_validate_against_rfc4287_grammar(storm: StoryWithArticles, tmp_path: Path) -> None:
    hostile = make_story(9, [make_article(30, title=HOSTILE_TITLE, content_html=HOSTILE_HTML)])
    documents = {
        "story.atom": publish.story_feed(storm, base_url=BASE, max_entries=50),
        "hostile.atom": publish.story_feed(hostile, base_url=BASE, max_entries=50),
        "river.atom": publish.stories_feed(
            [*river(storm), hostile], base_url=BASE, title="All", self_url=f"{BASE}/feed.atom", updated=T0
        ),
        "story-page-2.atom": publish.story_feed(storm, base_url=BASE, max_entries=1, page=2),
        "river-page-2.atom": publish.stories_feed(
            river(storm),
            base_url=BASE,
            title="All",
            self_url=f"{BASE}/feed.atom?page=2",
            updated=T0,
            paging=publish.Paging.of(2, 3, lambda n: publish.with_page(f"{BASE}/feed.atom", n)),
        ),
    }
    for name, data in documents.items():
        path = tmp_path / name
        path.write_bytes(data)
        result = subprocess.run(
            ["jing", "-c", str(SCHEMA), str(path)], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"{name}: {result.stdout}"


def test_publish_knows_nothing_of_flask() -> None:
    code = "import sys, aggregator.publish; assert 'flask' not in sys.modules, 'flask imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_naive_datetimes_are_taken_as_utc(storm: StoryWithArticles) -> None:
    naive = replace(storm.story, updated_at=datetime(2026, 3, 2, 8, 0))
    parsed = parse(publish.story_feed(replace(storm, story=naive), base_url=BASE, max_entries=50))
    assert parsed.feed.updated == "2026-03-02T08:00:00+00:00"


# --------------------------------------------------------------------------- paging (RFC 5005)


def links(parsed: feedparser.FeedParserDict) -> dict[str, str]:
    return {link.rel: link.href for link in parsed.feed.links}


def test_page_helpers() -> None:
    assert publish.page_count(0, 50) == 1  # an empty feed is one empty page
    assert publish.page_count(50, 50) == 1
    assert publish.page_count(51, 50) == 2
    assert publish.with_page(f"{BASE}/feed.atom?q=a+b&page=3", 1) == f"{BASE}/feed.atom?q=a+b"
    assert publish.with_page(f"{BASE}/feed.atom?q=a+b", 4) == f"{BASE}/feed.atom?q=a+b&page=4"
    assert publish.Paging.of(1, 1, str) is None
    middle = publish.Paging.of(2, 3, str)
    assert middle == publish.Paging(first="1", last="3", previous="1", next="3")
    assert middle.links() == [("first", "1"), ("previous", "1"), ("next", "3"), ("last", "3")]
    first = publish.Paging.of(1, 3, str)
    assert first is not None and first.previous is None and first.next == "2"


@pytest.mark.parametrize("render", [publish.story_feed, publish.story_feed_rss])
def test_story_feed_pages_cover_every_article_once(storm: StoryWithArticles, render: object) -> None:
    fmt = "atom" if render is publish.story_feed else "rss"
    url = f"{BASE}/stories/7/feed.{fmt}"
    pages = [parse(render(storm, base_url=BASE, max_entries=2, page=n)) for n in (1, 2)]  # type: ignore[operator]
    assert [[e.id.rsplit("/", 1)[1] for e in page.entries] for page in pages] == [["3", "2"], ["1"]]
    assert links(pages[0]) == {
        "self": url,
        "first": url,
        "next": f"{url}?page=2",
        "last": f"{url}?page=2",
        "alternate": f"{BASE}/stories/7",
        "hub": f"{BASE}/websub",  # only the first page is a WebSub topic
    }
    assert links(pages[1]) == {
        "self": f"{url}?page=2",
        "first": url,
        "previous": url,
        "last": f"{url}?page=2",
        "alternate": f"{BASE}/stories/7",
    }
    if fmt == "atom":
        assert pages[0].feed.id == pages[1].feed.id == "tag:news.example.org,2026:story/7/feed"
    single = parse(render(storm, base_url=BASE, max_entries=50))  # type: ignore[operator]
    assert set(links(single)) == {"self", "alternate", "hub"}  # one page: no paging links


def test_river_page_links_and_id(storm: StoryWithArticles) -> None:
    feed = f"{BASE}/feed.atom?min_sources=2"
    data = publish.stories_feed(
        river(storm),
        base_url=BASE,
        title="All",
        self_url=publish.with_page(feed, 3),
        updated=T0,
        paging=publish.Paging.of(3, 3, lambda n: publish.with_page(feed, n)),
    )
    parsed = parse(data)
    assert parsed.feed.id == "tag:news.example.org,2026:feed/feed.atom?min_sources=2"  # same on every page
    assert links(parsed)["self"] == f"{feed}&page=3"
    assert links(parsed)["previous"] == f"{feed}&page=2"
    assert links(parsed)["first"] == feed
    assert "next" not in links(parsed)


# --------------------------------------------------------------------------- RSS 2.0


def rss_tree(data: bytes) -> etree._Element:
    root = etree.fromstring(data)
    assert root.tag == "rss" and root.get("version") == "2.0"
    return root


def test_story_feed_rss_round_trips(storm: StoryWithArticles) -> None:
    data = publish.story_feed_rss(storm, base_url=BASE, max_entries=50)
    assert data.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    parsed = parse(data)
    assert parsed.version == "rss20"
    assert parsed.feed.title == "Storm hits coast"
    assert parsed.feed.link == f"{BASE}/stories/7"  # <link>: the HTML page
    assert links(parsed)["self"] == f"{BASE}/stories/7/feed.rss"  # atom:link rel=self
    assert "3 articles from 3 sources" in parsed.feed.subtitle
    assert parsed.feed.updated_parsed == storm.story.updated_at.utctimetuple()  # lastBuildDate
    assert [e.id for e in parsed.entries] == [f"tag:news.example.org,2026:article/{n}" for n in (3, 2, 1)]
    beta = parsed.entries[1]
    assert beta.guidislink is False
    assert beta.link == "https://beta.example/storm"
    assert beta.published_parsed == (T0 + timedelta(hours=1)).utctimetuple()
    assert beta.author == "Jo Reporter"  # dc:creator
    assert parsed.entries[0].author == "Gamma Wire"  # no author: the outlet
    assert beta.summary == "<p>Body text.</p>"  # description: the HTML content
    channel = rss_tree(data)[0]
    guids = channel.findall("item/guid")
    assert [guid.get("isPermaLink") for guid in guids] == ["false"] * 3


def test_rss_is_byte_identical_across_renders(storm: StoryWithArticles) -> None:
    assert publish.story_feed_rss(storm, base_url=BASE, max_entries=50) == publish.story_feed_rss(
        storm, base_url=BASE + "/", max_entries=50
    )
    render = lambda: publish.stories_feed_rss(  # noqa: E731
        river(storm), base_url=BASE, title="All", self_url=f"{BASE}/feed.rss", updated=T0
    )
    assert render() == render()


def test_rss_description_is_sanitised_html_never_the_raw_summary() -> None:
    story = make_story(
        3,
        [
            make_article(
                10,
                title=HOSTILE_TITLE,
                content_html=HOSTILE_HTML,
                summary="<script>alert(2)</script> plain summary",
                author="<b>Mallory</b>",
            ),
            make_article(11, content_html="", summary="a < b & <i>c</i>", published=T0 + timedelta(hours=1)),
        ],
    )
    for data in (
        publish.story_feed_rss(story, base_url=BASE, max_entries=50),
        publish.stories_feed_rss(
            [story], base_url=BASE, title="All", self_url=f"{BASE}/feed.rss", updated=T0
        ),
    ):
        raw = data.decode("utf-8")
        for needle in FORBIDDEN:
            assert needle not in raw, needle
        assert "</title><script>" not in raw
        for item in parse(data).entries:
            for needle in FORBIDDEN:
                assert needle not in item.summary, needle
    entries = parse(publish.story_feed_rss(story, base_url=BASE, max_entries=50)).entries
    assert "Hello <b>world</b>" in entries[1].summary
    assert entries[0].summary == "<p>a &lt; b &amp; &lt;i&gt;c&lt;/i&gt;</p>"  # text stays text


def test_rss_strips_control_characters_and_bad_links() -> None:
    story = make_story(
        5,
        [
            make_article(
                13, title="Bad\x00 chars\x1f", content_html="<p>con\x01tent</p>", url="javascript:x"
            ),
            make_article(14, url="file:///etc/passwd", published=T0 + timedelta(hours=1)),
        ],
    )
    data = publish.story_feed_rss(story, base_url=BASE, max_entries=50)
    rss_tree(data)  # well-formed XML 1.0
    assert b"javascript:" not in data and b"file:" not in data
    parsed = parse(data)
    assert parsed.entries[1].title == "Bad chars"
    assert all("link" not in item for item in parsed.entries)


def test_river_rss_has_one_item_per_story(storm: StoryWithArticles) -> None:
    data = publish.stories_feed_rss(
        river(storm), base_url=BASE, title="All stories", self_url=f"{BASE}/feed.rss", updated=T0
    )
    parsed = parse(data)
    assert parsed.feed.title == "All stories"
    assert parsed.feed.link == f"{BASE}/"
    assert [e.id for e in parsed.entries] == [
        "tag:news.example.org,2026:story/7",
        "tag:news.example.org,2026:story/8",
    ]
    first = parsed.entries[0]
    assert first.link == f"{BASE}/stories/7"
    assert first.published_parsed == storm.story.first_published.utctimetuple()
    assert [a.name for a in first.authors] == ["Alpha Times", "Beta Post", "Gamma Wire"]
    for article in storm.articles:
        assert f'href="{article.url}"' in first.summary


def test_empty_rss_feeds_are_valid(storm: StoryWithArticles) -> None:
    empty = StoryWithArticles(story=storm.story, articles=())
    assert parse(publish.story_feed_rss(empty, base_url=BASE, max_entries=50)).entries == []
    river_rss = publish.stories_feed_rss(
        [], base_url=BASE, title="All", self_url=f"{BASE}/feed.rss", updated=T0
    )
    assert parse(river_rss).entries == []
