"""Plain domain records shared by every step of the pipeline.

These are frozen dataclasses with no behaviour beyond trivial derived values.
They are what storage returns and what the parser, the clustering and the
publishers take; no module outside ``aggregator.storage`` ever sees an ORM row,
and no module outside ``aggregator.parse`` ever sees a feedparser dict.

All datetimes are timezone-aware UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

# --------------------------------------------------------------------------- parse output


@dataclass(frozen=True)
class ParsedEntry:
    """One feed entry after normalisation (see ``aggregator.parse``)."""

    key: str  # stable per-feed entry key: guid, else canonical link, else content hash
    title: str  # plain text
    link: str | None  # canonical URL (tracking parameters removed), or None
    summary: str  # plain text, whitespace-collapsed
    content_html: str  # sanitised HTML (safe to embed), may be ""
    text: str  # plain text of the body (content, else summary)
    author: str | None
    published: datetime  # UTC; fetch time when the feed gives none
    updated: datetime  # UTC; == published when the feed gives none
    content_hash: str  # sha256 hex of title + text, to detect updates
    dated: bool = True  # False when the feed gave no date (published is then the fetch time)


@dataclass(frozen=True)
class ParsedFeed:
    """A whole parsed document."""

    title: str | None
    link: str | None  # the site's home page
    entries: tuple[ParsedEntry, ...]
    ttl_minutes: int | None = None  # RSS <ttl>, if any
    warning: str | None = None  # feedparser's bozo message when it still got entries
    skip_hours: tuple[int, ...] = ()  # RSS <skipHours>: UTC hours 0..23 not to poll
    skip_days: tuple[str, ...] = ()  # RSS <skipDays>: lower-case English day names
    update_period: str | None = None  # <sy:updatePeriod>: hourly, daily, weekly, monthly, yearly
    update_frequency: int | None = None  # <sy:updateFrequency>: updates per period


# --------------------------------------------------------------------------- fetch output


@dataclass(frozen=True)
class FetchResult:
    """What one HTTP (or file) fetch produced."""

    status: int  # HTTP status, 200 for a local file, 304 for not modified
    url: str  # final URL after redirects
    body: bytes | None  # None on 304
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    etag: str | None = None
    last_modified: str | None = None
    permanent_redirect: str | None = None  # new URL when a 301/308 was followed

    @property
    def not_modified(self) -> bool:
        return self.status == 304


# --------------------------------------------------------------------------- stored records


@dataclass(frozen=True)
class Feed:
    id: int
    url: str
    title: str | None
    site_url: str | None
    folder: str | None
    added_at: datetime
    etag: str | None
    last_modified: str | None
    last_fetched_at: datetime | None
    last_success_at: datetime | None
    next_check_at: datetime
    error_count: int
    last_error: str | None
    article_count: int = 0
    min_interval: int | None = None  # seconds; overrides the settings' min_interval
    max_interval: int | None = None  # seconds; overrides the settings' max_interval
    stopped: str | None = None  # why polling stopped (e.g. 410 Gone); None while polled
    poll_hints: str | None = None  # the last document's polling hints (JSON, see politeness)


@dataclass(frozen=True)
class FeedState:
    """The part of a feed's row that the ingest pipeline updates after a fetch."""

    etag: str | None
    last_modified: str | None
    last_fetched_at: datetime
    last_success_at: datetime | None
    next_check_at: datetime
    error_count: int
    last_error: str | None
    title: str | None = None
    site_url: str | None = None
    url: str | None = None  # new URL after a permanent redirect
    stopped: str | None = None  # written as is: None resumes polling
    poll_hints: str | None = None  # written as is


@dataclass(frozen=True)
class Article:
    id: int
    feed_id: int
    key: str
    url: str | None
    title: str
    summary: str
    content_html: str
    text: str
    author: str | None
    source: str | None  # the outlet's name (feed title)
    published: datetime
    updated: datetime
    fetched_at: datetime
    content_hash: str
    story_id: int | None
    score: float | None  # similarity that decided the membership
    signal: str | None  # which rule decided ("new", "copy", "similar", ...)
    copy_of: int | None  # article id this one is a copy of
    dated: bool = True  # False when the feed gave no date (published is then the fetch time)


@dataclass(frozen=True, slots=True)
class ClusteredText:
    """What a clustering rebuild reads of a clustered article: its words, time and story
    (not its stored HTML), with its stored MinHash signature if any."""

    id: int
    story_id: int
    title: str
    text: str  # the extracted text, or the summary when there is none
    published: datetime | None  # None when the feed gave no date
    source: str | None
    url: str | None
    cluster_seq: int
    params: str | None  # the signature's parameters, None without a stored signature
    hashvalues: bytes | None


@dataclass(frozen=True)
class Story:
    id: int
    headline: str
    created_at: datetime
    updated_at: datetime  # last change: an article joined or was updated
    first_published: datetime
    last_published: datetime
    article_count: int
    source_count: int
    sources: tuple[str, ...]  # distinct outlet names
    merged_into: int | None = None


@dataclass(frozen=True)
class StoryWithArticles:
    story: Story
    articles: tuple[Article, ...]  # oldest first


@dataclass(frozen=True)
class UpdateReport:
    """What one feed update did, for the CLI, logs and tests."""

    feed_id: int
    url: str
    status: str  # "ok", "not_modified", "error"
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    seconds: float = 0.0
