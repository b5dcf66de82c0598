"""Feed rendering: stories in, Atom 1.0 and RSS 2.0 documents (UTF-8 bytes) out.

Two documents are published, each in both formats:

* :func:`story_feed` / :func:`story_feed_rss` -- one feed per story, one entry
  per article (newest first), so that a reader can follow an event as outlets
  report on it;
* :func:`stories_feed` / :func:`stories_feed_rss` -- the river, one entry per
  *story* (never one per copy), whose content lists every outlet's article.

This module is the only one that imports feedgen. Its functions are pure: they
take records and return bytes, and the same input always gives the same bytes
(two renders of an unchanged story are byte-identical). That is why nothing
here reads the clock: every ``updated`` comes from the data (``story.updated_at``,
``article.updated``) or from the caller; feedgen would otherwise stamp "now".

Ids are ``tag:`` URIs (RFC 4151) built from the host of ``base_url`` and the
database ids, so they stay stable across renders, restarts and pages; they
change only if the public host changes. RSS carries the same ids as
``<guid isPermaLink="false">``.

Paging (RFC 5005). Long feeds are split into pages of ``max_entries`` entries;
a page carries ``first``, ``last``, ``previous`` (newer) and ``next`` (older)
links (:class:`Paging`), in Atom as ``atom:link`` and in RSS as ``atom:link``
inside the channel. These are *paged feeds* (RFC 5005 section 3), not *archived
feeds* (section 4, ``prev-archive``): an archive document promises that its
content does not change, and ours cannot keep that promise -- the river is
ordered by latest activity, so stories move between pages as they grow, and
stories can be merged or split; a story's articles can be updated in place.
Every page of one feed shares the feed's ``atom:id`` (it is one logical feed),
and its ``rel="self"`` is the page's own URL.

What it must not do: know about Flask or HTTP requests, touch storage, fetch
anything, or trust the HTML it is given. Article HTML is sanitised again on the
way out (defence in depth: the parser already sanitised it on the way in), every
string is stripped of characters that XML 1.0 forbids, and only http(s) URLs
become links. In RSS, ``<description>`` is always HTML (what readers expect):
the sanitised content, never the plain-text summary, which could otherwise be
read as markup.
"""

from __future__ import annotations

import functools
import html
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from feedgen.ext.base import BaseExtension  # type: ignore[import-untyped]
from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]

from aggregator import __version__
from aggregator.models import Article, Story, StoryWithArticles
from aggregator.text import sanitize_html

TAG_DATE = "2026"  # the date part of our tag: URIs; never change it (ids would change)
GENERATOR = "aggregator"
UNTITLED = "(untitled)"
UNKNOWN_SOURCE = "unknown source"
# Bump when the bytes rendered for the same data change (a new element, a fix):
# the web layer puts it in every ETag, so caches and readers fetch the new form.
FORMAT_VERSION = 4
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # "updated" of a feed with no entries
# A river entry lists at most this many of its story's articles: the first few (the
# original reports) and the latest (what moved the entry); the story page lists all.
ENTRY_FIRST_ARTICLES = 3
ENTRY_LATEST_ARTICLES = 7
# Sanitised fragments kept per process (most recently used; a few KB each).
SANITIZED_CACHE_SIZE = 2048

ATOM_NS = "http://www.w3.org/2005/Atom"
Format = Literal["atom", "rss"]
FORMATS: tuple[Format, ...] = ("atom", "rss")
MIMETYPES: dict[Format, str] = {
    "atom": "application/atom+xml",
    "rss": "application/rss+xml",
}

# Characters XML 1.0 does not allow (C0 controls except tab/LF/CR, lone
# surrogates, U+FFFE/U+FFFF). lxml refuses them outright, so they must go.
_SPACE = re.compile(r"\s")
_XML_INVALID = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


# --------------------------------------------------------------------------- small pure helpers


def xml_text(value: str | None) -> str:
    """``value`` without the characters XML 1.0 forbids ("" for None)."""
    if not value:
        return ""
    return _XML_INVALID.sub("", value)


def http_url(url: str | None) -> str | None:
    """``url`` if it is an absolute http(s) URL, else None (no javascript:, data:, file: links)."""
    if not url:
        return None
    url = xml_text(url).strip()
    if _SPACE.search(url):  # str.isspace()'s characters (both are Py_UNICODE_ISSPACE)
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


@functools.lru_cache(maxsize=64)
def tag_authority(base_url: str) -> str:
    """The host part of our tag: URIs: the lower-cased host of ``base_url``."""
    try:
        host = urlsplit(base_url).hostname
    except ValueError:
        host = None
    return (host or "localhost").lower()


def story_tag(base_url: str, story_id: int) -> str:
    return f"tag:{tag_authority(base_url)},{TAG_DATE}:story/{story_id}"


def story_feed_tag(base_url: str, story_id: int) -> str:
    # Distinct from the story's own id, which the river feed uses for its entry.
    return f"tag:{tag_authority(base_url)},{TAG_DATE}:story/{story_id}/feed"


def article_tag(base_url: str, article_id: int) -> str:
    return f"tag:{tag_authority(base_url)},{TAG_DATE}:article/{article_id}"


def feed_tag(base_url: str, self_url: str) -> str:
    """Id of a listing feed, derived from its canonical URL's path and query
    (without ``page``: every page of a feed is the same feed)."""
    parts = urlsplit(with_page(self_url, 1))
    specific = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"tag:{tag_authority(base_url)},{TAG_DATE}:feed{specific}"


def story_page_url(base_url: str, story_id: int) -> str:
    return f"{base_url.rstrip('/')}/stories/{story_id}"


def story_feed_url(base_url: str, story_id: int, fmt: Format = "atom", page: int = 1) -> str:
    return with_page(f"{base_url.rstrip('/')}/stories/{story_id}/feed.{fmt}", page)


def with_page(url: str, page: int) -> str:
    """``url`` with its ``page`` query parameter set to ``page`` (removed for page 1)."""
    parts = urlsplit(url)
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "page"]
    if page > 1:
        query.append(("page", str(page)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def page_count(total: int, per_page: int) -> int:
    """Pages needed for ``total`` entries (at least one: an empty feed is one empty page)."""
    return max(1, math.ceil(max(0, total) / max(1, per_page)))


@dataclass(frozen=True)
class Paging:
    """The RFC 5005 (section 3) links of one page of a paged feed.

    ``previous`` is the newer neighbour, ``next`` the older one; the first
    page has no ``previous`` and the last no ``next``.
    """

    first: str
    last: str
    previous: str | None = None
    next: str | None = None

    @classmethod
    def of(cls, page: int, pages: int, url_of: Callable[[int], str]) -> Paging | None:
        """The links of ``page`` out of ``pages``; None when the feed fits one page."""
        if pages <= 1:
            return None
        return cls(
            first=url_of(1),
            last=url_of(pages),
            previous=url_of(page - 1) if page > 1 else None,
            next=url_of(page + 1) if page < pages else None,
        )

    def links(self) -> list[tuple[str, str]]:
        """(rel, href) pairs, in a fixed order."""
        found = [("first", self.first), ("previous", self.previous), ("next", self.next), ("last", self.last)]
        return [(rel, href) for rel, href in found if href]


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:  # storage hands out aware UTC; be safe anyway
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _one_line(value: str | None, fallback: str) -> str:
    text = " ".join(xml_text(value).split())
    return text or fallback


@functools.lru_cache(maxsize=SANITIZED_CACHE_SIZE)
def _sanitize(fragment: str, base_url: str | None) -> str:
    """Article HTML through the project's one sanitiser, then XML-clean.

    Memoised (a pure function of its arguments): a story that gains an article is
    rendered again, and only the new article's HTML needs the sanitiser; the stored
    HTML is still never trusted."""
    return xml_text(sanitize_html(xml_text(fragment), base_url=base_url))


def _source_name(article: Article) -> str:
    return _one_line(article.source, UNKNOWN_SOURCE)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc}/"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def story_summary(story: Story) -> str:
    """One plain-text line: how many articles from which outlets."""
    sources = ", ".join(_one_line(name, UNKNOWN_SOURCE) for name in story.sources)
    text = f"{_plural(story.article_count, 'article')} from {_plural(story.source_count, 'source')}"
    return f"{text}: {sources}" if sources else text


# --------------------------------------------------------------------------- feed skeleton


class _RssLinks(BaseExtension):  # type: ignore[misc]
    """feedgen writes only ``rel="self"`` into RSS; this adds the paging links
    (``atom:link`` in the channel), through feedgen's extension hook."""

    def __init__(self) -> None:
        self.links: list[tuple[str, str]] = []

    def extend_rss(self, feed: Any) -> Any:
        channel = feed[0]
        for rel, href in self.links:
            element = channel.makeelement(f"{{{ATOM_NS}}}link", {"href": href, "rel": rel})
            if rel != "hub":
                element.set("type", MIMETYPES["rss"])
            channel.append(element)
        return feed


HUB_PATH = "/websub"  # where aggregator's own WebSub hub answers (aggregator.web.websub)


def hub_url(base_url: str) -> str:
    """The WebSub hub that every feed under ``base_url`` advertises."""
    return base_url.rstrip("/") + HUB_PATH


def link_header(hub: str, topic: str) -> str:
    """The HTTP ``Link`` header that names the hub and the topic (WebSub 4), on
    feed responses and on content distributions."""
    return f'<{hub}>; rel="hub", <{topic}>; rel="self"'


def hub_link_header(base_url: str, topic_url: str) -> str:
    return link_header(hub_url(base_url), topic_url)


def river_title(
    *, min_sources: int, feed_name: str | None = None, folder: str | None = None, text: str | None = None
) -> str:
    """The title of a river feed with these filters."""
    if min_sources > 1:
        title = f"aggregator: stories reported by {min_sources}+ sources"
    else:
        title = "aggregator: all stories"
    if feed_name is not None:
        title += f" from {feed_name}"
    if folder is not None:
        title += f" in folder {folder}"
    if text is not None:
        title += f" matching \u201c{text}\u201d"
    return title


def _new_feed(
    *,
    fmt: Format,
    feed_id: str,
    title: str,
    updated: datetime,
    self_url: str,
    alternate_url: str,
    subtitle: str,
    paging: Paging | None,
    hub: str | None,
) -> FeedGenerator:
    """``hub``: the WebSub hub to advertise; only a feed's first page is a
    WebSub topic, so later pages pass None."""
    fg = FeedGenerator()
    fg.id(feed_id)
    fg.title(_one_line(title, UNTITLED))
    fg.updated(_utc(updated))  # also RSS lastBuildDate (feedgen's default is "now")
    fg.link(href=xml_text(self_url), rel="self", type=MIMETYPES[fmt])
    extra = list(paging.links()) if paging is not None else []
    if hub is not None and (paging is None or paging.previous is None):
        extra.append(("hub", hub))
    if extra:
        if fmt == "atom":
            for rel, href in extra:
                if rel == "hub":
                    fg.link(href=xml_text(href), rel=rel)
                else:
                    fg.link(href=xml_text(href), rel=rel, type=MIMETYPES[fmt])
        else:
            fg.register_extension("paging", _RssLinks, None, atom=False, rss=True)
            fg.paging.links = [(rel, xml_text(href)) for rel, href in extra]
    # Last: feedgen uses the last link as RSS's <link>, which must be the HTML page.
    fg.link(href=xml_text(alternate_url), rel="alternate", type="text/html")
    fg.author({"name": GENERATOR})
    fg.generator(GENERATOR, version=__version__)
    fg.subtitle(_one_line(subtitle, GENERATOR))  # RSS needs a description
    if fmt == "rss":
        # dc:creator names authors in RSS (its <author> must be an e-mail address).
        fg.load_extension("dc", atom=False, rss=True)
    return fg


def _render(fg: FeedGenerator, fmt: Format) -> bytes:
    if fmt == "rss":
        rss: bytes = fg.rss_str(pretty=True, encoding="UTF-8", xml_declaration=True)
        return rss
    data: bytes = fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return data


# --------------------------------------------------------------------------- per-story feed


def story_feed(story: StoryWithArticles, *, base_url: str, max_entries: int, page: int = 1) -> bytes:
    """The Atom feed of one story: page ``page`` of its articles, newest first,
    ``max_entries`` a page."""
    return _story_feed(story, base_url=base_url, max_entries=max_entries, page=page, fmt="atom")


def story_feed_rss(story: StoryWithArticles, *, base_url: str, max_entries: int, page: int = 1) -> bytes:
    """:func:`story_feed` as RSS 2.0."""
    return _story_feed(story, base_url=base_url, max_entries=max_entries, page=page, fmt="rss")


def _story_feed(
    story: StoryWithArticles, *, base_url: str, max_entries: int, page: int, fmt: Format
) -> bytes:
    base_url = base_url.rstrip("/")
    record = story.story
    per_page = max(1, max_entries)
    page = max(1, page)
    pages = page_count(len(story.articles), per_page)
    fg = _new_feed(
        fmt=fmt,
        feed_id=story_feed_tag(base_url, record.id),
        title=record.headline,
        updated=record.updated_at,
        self_url=story_feed_url(base_url, record.id, fmt, page),
        alternate_url=story_page_url(base_url, record.id),
        subtitle=story_summary(record),
        paging=Paging.of(page, pages, lambda number: story_feed_url(base_url, record.id, fmt, number)),
        hub=hub_url(base_url),
    )
    newest_first = sorted(story.articles, key=lambda a: (_utc(a.published), a.id), reverse=True)
    for article in newest_first[(page - 1) * per_page : page * per_page]:
        _add_article_entry(fg, article, base_url, fmt)
    return _render(fg, fmt)


def _add_article_entry(fg: FeedGenerator, article: Article, base_url: str, fmt: Format) -> None:
    # order="append": feedgen prepends by default, which would reverse our order.
    entry = fg.add_entry(order="append")
    entry.id(article_tag(base_url, article.id))  # RSS: <guid isPermaLink="false">
    entry.title(_one_line(article.title, UNTITLED))
    entry.published(_utc(article.published))  # RSS: <pubDate>
    entry.updated(_utc(article.updated))
    source = _source_name(article)
    author = _one_line(article.author, source)
    link = http_url(article.url)
    if link:
        entry.link(href=link, rel="alternate", type="text/html")  # the only link (see below)
    summary = xml_text(article.summary).strip()
    content = _sanitize(article.content_html, link)
    if not content.strip():
        content = f"<p>{html.escape(summary or _one_line(article.title, UNTITLED))}</p>"
    if fmt == "rss":
        entry.dc.dc_creator(author)
        entry.description(content)
        return
    entry.author({"name": author})
    # <source> names the original outlet (feedgen needs both a title and a link;
    # the outlet's site is the article's origin).
    if link and article.source:
        entry.source(url=_origin(link), title=source)
    entry.content(content, type="html")
    if summary:
        entry.summary(summary)


# --------------------------------------------------------------------------- the river


def stories_feed(
    stories: Sequence[StoryWithArticles],
    *,
    base_url: str,
    title: str,
    self_url: str,
    updated: datetime,
    alternate_url: str | None = None,
    paging: Paging | None = None,
    contents: Mapping[int, str] | None = None,
) -> bytes:
    """One Atom entry per story, in the order given.

    ``self_url`` must be canonical: it is this page's URL, and without its
    ``page`` parameter it yields the feed id. ``updated`` is the caller's
    choice, normally the newest ``story.updated_at`` listed. ``alternate_url``
    is the HTML page of the listing (the home page by default); ``paging`` the
    RFC 5005 links when the listing has several pages. ``contents``: entry
    contents already made by :func:`story_entry_content`, by story id (the
    stories given for those need no articles).
    """
    return _stories_feed(
        stories,
        base_url=base_url,
        title=title,
        self_url=self_url,
        updated=updated,
        alternate_url=alternate_url,
        paging=paging,
        contents=contents,
        fmt="atom",
    )


def stories_feed_rss(
    stories: Sequence[StoryWithArticles],
    *,
    base_url: str,
    title: str,
    self_url: str,
    updated: datetime,
    alternate_url: str | None = None,
    paging: Paging | None = None,
    contents: Mapping[int, str] | None = None,
) -> bytes:
    """:func:`stories_feed` as RSS 2.0."""
    return _stories_feed(
        stories,
        base_url=base_url,
        title=title,
        self_url=self_url,
        updated=updated,
        alternate_url=alternate_url,
        paging=paging,
        contents=contents,
        fmt="rss",
    )


def _stories_feed(
    stories: Sequence[StoryWithArticles],
    *,
    base_url: str,
    title: str,
    self_url: str,
    updated: datetime,
    alternate_url: str | None,
    paging: Paging | None,
    fmt: Format,
    contents: Mapping[int, str] | None = None,
) -> bytes:
    base_url = base_url.rstrip("/")
    fg = _new_feed(
        fmt=fmt,
        feed_id=feed_tag(base_url, self_url),
        title=title,
        updated=updated,
        self_url=self_url,
        alternate_url=alternate_url or f"{base_url}/",
        subtitle="One entry per story, however many outlets report it.",
        paging=paging,
        hub=hub_url(base_url),
    )
    for item in stories:
        content = contents.get(item.story.id) if contents is not None else None
        _add_story_entry(fg, item, base_url, fmt, content)
    return _render(fg, fmt)


def story_entry_content(item: StoryWithArticles, base_url: str) -> str:
    """The (sanitised) HTML content of a story's entry in the river feeds: a function
    of the story's articles alone, so a caller may keep it while the story is unchanged."""
    page = story_page_url(base_url.rstrip("/"), item.story.id)
    return _sanitize(story_content_html(item, page), page)


def _add_story_entry(
    fg: FeedGenerator, item: StoryWithArticles, base_url: str, fmt: Format, content: str | None = None
) -> None:
    story = item.story
    page = story_page_url(base_url, story.id)
    entry = fg.add_entry(order="append")
    entry.id(story_tag(base_url, story.id))
    entry.title(_one_line(story.headline, UNTITLED))
    entry.published(_utc(story.first_published))
    entry.updated(_utc(story.updated_at))
    # One link only: feedgen 1.0 drops rel/type of entry links (they all read as
    # rel="alternate"), so a second link would make two alternates.
    entry.link(href=page, rel="alternate", type="text/html")
    names = [_one_line(name, UNKNOWN_SOURCE) for name in story.sources] or [UNKNOWN_SOURCE]
    if content is None:
        content = story_entry_content(item, base_url)
    if fmt == "rss":
        entry.dc.dc_creator(names)
        entry.description(content)
        return
    for name in names:
        entry.author({"name": name})
    entry.summary(story_summary(story))
    entry.content(content, type="html")


def story_content_html(item: StoryWithArticles, page_url: str) -> str:
    """HTML listing a story's articles (outlet, linked title, time), oldest first: all of
    them up to ``ENTRY_FIRST_ARTICLES + ENTRY_LATEST_ARTICLES``, else the first and the
    latest with a line counting the others (a big story has hundreds: a river feed of
    50 such entries would be megabytes)."""
    story = item.story
    lines = [
        f"<p>{html.escape(story_summary(story))}.</p>",
        "<ul>",
    ]
    articles = item.articles
    first, latest = ENTRY_FIRST_ARTICLES, ENTRY_LATEST_ARTICLES
    hidden = len(articles) - first - latest
    for position, article in enumerate(articles):
        if hidden > 0 and first <= position < first + hidden:
            if position == first:
                more = _plural(hidden, "more article")
                lines.append(f'<li><a href="{html.escape(page_url, quote=True)}">… {more} …</a></li>')
            continue
        source = html.escape(_source_name(article))
        title = html.escape(_one_line(article.title, UNTITLED))
        link = http_url(article.url)
        headline = f'<a href="{html.escape(link, quote=True)}">{title}</a>' if link else title
        when = _utc(article.published).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"<li><strong>{source}</strong>: {headline} ({when})</li>")
    lines.append("</ul>")
    lines.append(f'<p><a href="{html.escape(page_url, quote=True)}">All coverage of this story</a></p>')
    return "\n".join(lines)
