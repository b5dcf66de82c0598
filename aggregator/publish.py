"""Atom rendering: stories in, Atom 1.0 documents (UTF-8 bytes) out.

Two documents are published:

* :func:`story_feed` -- one feed per story, one entry per article (newest
  first), so that a reader can follow an event as outlets report on it;
* :func:`stories_feed` -- the river, one entry per *story* (never one per copy),
  whose content lists every outlet's article.

This module is the only one that imports feedgen. Its functions are pure: they
take records and return bytes, and the same input always gives the same bytes
(two renders of an unchanged story are byte-identical). That is why nothing
here reads the clock: every ``updated`` comes from the data (``story.updated_at``,
``article.updated``) or from the caller; feedgen would otherwise stamp "now".

Ids are ``tag:`` URIs (RFC 4151) built from the host of ``base_url`` and the
database ids, so they stay stable across renders and restarts; they change only
if the public host changes.

What it must not do: know about Flask or HTTP requests, touch storage, fetch
anything, or trust the HTML it is given. Article HTML is sanitised again on the
way out (defence in depth: the parser already sanitised it on the way in), every
string is stripped of characters that XML 1.0 forbids, and only http(s) URLs
become links.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

from feedgen.feed import FeedGenerator  # type: ignore[import-untyped]

from aggregator import __version__
from aggregator.models import Article, Story, StoryWithArticles
from aggregator.text import sanitize_html

TAG_DATE = "2026"  # the date part of our tag: URIs; never change it (ids would change)
GENERATOR = "aggregator"
UNTITLED = "(untitled)"
UNKNOWN_SOURCE = "unknown source"

# Characters XML 1.0 does not allow (C0 controls except tab/LF/CR, lone
# surrogates, U+FFFE/U+FFFF). lxml refuses them outright, so they must go.
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
    if any(ch.isspace() for ch in url):
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


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
    """Id of a listing feed, derived from its canonical self URL's path and query."""
    parts = urlsplit(self_url)
    specific = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return f"tag:{tag_authority(base_url)},{TAG_DATE}:feed{specific}"


def story_page_url(base_url: str, story_id: int) -> str:
    return f"{base_url.rstrip('/')}/stories/{story_id}"


def story_feed_url(base_url: str, story_id: int) -> str:
    return f"{base_url.rstrip('/')}/stories/{story_id}/feed.atom"


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:  # storage hands out aware UTC; be safe anyway
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _one_line(value: str | None, fallback: str) -> str:
    text = " ".join(xml_text(value).split())
    return text or fallback


def _sanitize(fragment: str, base_url: str | None) -> str:
    """Article HTML through the project's one sanitiser, then XML-clean."""
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


def _new_feed(
    *,
    feed_id: str,
    title: str,
    updated: datetime,
    self_url: str,
    alternate_url: str,
    subtitle: str | None,
) -> FeedGenerator:
    fg = FeedGenerator()
    fg.id(feed_id)
    fg.title(_one_line(title, UNTITLED))
    fg.updated(_utc(updated))
    fg.link(href=xml_text(self_url), rel="self", type="application/atom+xml")
    fg.link(href=xml_text(alternate_url), rel="alternate", type="text/html")
    fg.author({"name": GENERATOR})
    fg.generator(GENERATOR, version=__version__)
    if subtitle:
        fg.subtitle(_one_line(subtitle, ""))
    return fg


def _render(fg: FeedGenerator) -> bytes:
    data: bytes = fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    return data


# --------------------------------------------------------------------------- per-story feed


def story_feed(story: StoryWithArticles, *, base_url: str, max_entries: int) -> bytes:
    """The Atom feed of one story: its newest ``max_entries`` articles, newest first."""
    base_url = base_url.rstrip("/")
    record = story.story
    fg = _new_feed(
        feed_id=story_feed_tag(base_url, record.id),
        title=record.headline,
        updated=record.updated_at,
        self_url=story_feed_url(base_url, record.id),
        alternate_url=story_page_url(base_url, record.id),
        subtitle=story_summary(record),
    )
    newest_first = sorted(story.articles, key=lambda a: (_utc(a.published), a.id), reverse=True)
    for article in newest_first[: max(0, max_entries)]:
        _add_article_entry(fg, article, base_url)
    return _render(fg)


def _add_article_entry(fg: FeedGenerator, article: Article, base_url: str) -> None:
    # order="append": feedgen prepends by default, which would reverse our order.
    entry = fg.add_entry(order="append")
    entry.id(article_tag(base_url, article.id))
    entry.title(_one_line(article.title, UNTITLED))
    entry.published(_utc(article.published))
    entry.updated(_utc(article.updated))
    source = _source_name(article)
    entry.author({"name": _one_line(article.author, source)})
    link = http_url(article.url)
    if link:
        entry.link(href=link, rel="alternate", type="text/html")  # the only link (see below)
        # <source> names the original outlet (feedgen needs both a title and a link;
        # the outlet's site is the article's origin).
        if article.source:
            entry.source(url=_origin(link), title=source)
    summary = xml_text(article.summary).strip()
    content = _sanitize(article.content_html, link)
    if not content.strip():
        content = f"<p>{html.escape(summary or _one_line(article.title, UNTITLED))}</p>"
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
) -> bytes:
    """One Atom entry per story, in the order given.

    ``self_url`` must be canonical (it also yields the feed id); ``updated`` is
    the caller's choice, normally the newest ``story.updated_at`` listed.
    ``alternate_url`` is the HTML page of the listing (the home page by default).
    """
    base_url = base_url.rstrip("/")
    fg = _new_feed(
        feed_id=feed_tag(base_url, self_url),
        title=title,
        updated=updated,
        self_url=self_url,
        alternate_url=alternate_url or f"{base_url}/",
        subtitle="One entry per story, however many outlets report it.",
    )
    for item in stories:
        _add_story_entry(fg, item, base_url)
    return _render(fg)


def _add_story_entry(fg: FeedGenerator, item: StoryWithArticles, base_url: str) -> None:
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
    for name in names:
        entry.author({"name": name})
    entry.summary(story_summary(story))
    entry.content(_sanitize(story_content_html(item, page), page), type="html")


def story_content_html(item: StoryWithArticles, page_url: str) -> str:
    """HTML listing every article of a story (outlet, linked title, time), oldest first."""
    story = item.story
    lines = [
        f"<p>{html.escape(story_summary(story))}.</p>",
        "<ul>",
    ]
    for article in item.articles:
        source = html.escape(_source_name(article))
        title = html.escape(_one_line(article.title, UNTITLED))
        link = http_url(article.url)
        headline = f'<a href="{html.escape(link, quote=True)}">{title}</a>' if link else title
        when = _utc(article.published).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"<li><strong>{source}</strong>: {headline} ({when})</li>")
    lines.append("</ul>")
    lines.append(f'<p><a href="{html.escape(page_url, quote=True)}">All coverage of this story</a></p>')
    return "\n".join(lines)
