"""Helpers shared by the blueprints: the app's context, the public base URL,
query-string parsing, and the Jinja filters.

Must not: query storage itself, or mark anything safe for HTML except the
output of ``aggregator.text.sanitize_html``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, abort, current_app, request
from markupsafe import Markup

from aggregator import __version__
from aggregator.config import Settings
from aggregator.models import Article, Feed, Story
from aggregator.publish import http_url
from aggregator.storage import Storage
from aggregator.text import sanitize_html

MAX_PAGE = 1_000_000
MAX_MIN_SOURCES = 1000
MAX_API_PAGE_SIZE = 200
ORDERS = ("updated", "sources")

# How the clustering's decision reads to a person ("why it joined"); the
# signals are those of ``aggregator.cluster`` and ``aggregator.ingest``.
SIGNAL_TEXT: dict[str, str] = {
    "new": "started this story",
    "empty": "started this story (no text to compare)",
    "copy": "copy of article",
    "same_url": "same link as article",
    "similar": "similar text",
}


def settings() -> Settings:
    found: Settings = current_app.extensions["aggregator"].settings
    return found


def storage() -> Storage:
    found: Storage = current_app.extensions["aggregator"].storage
    return found


def base_url() -> str:
    """Public base URL without trailing slash: ``settings.base_url``, else the request's root."""
    configured = settings().base_url
    return (configured or request.url_root).rstrip("/")


def int_arg(name: str, default: int, *, minimum: int = 1, maximum: int = MAX_PAGE) -> int:
    """A positive integer query parameter; 400 with a clear message when malformed."""
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    if len(raw) > 9 or not raw.isascii() or not raw.isdigit():
        abort(400, description=f"{name} must be a whole number between {minimum} and {maximum}")
    value = int(raw)
    if not minimum <= value <= maximum:
        abort(400, description=f"{name} must be a whole number between {minimum} and {maximum}")
    return value


def order_arg() -> str:
    value = request.args.get("order", "").strip() or "updated"
    if value not in ORDERS:
        abort(400, description=f"order must be one of: {', '.join(ORDERS)}")
    return value


def min_sources_arg() -> int:
    return int_arg("min_sources", 1, maximum=MAX_MIN_SOURCES)


def iso(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` (JSON and ``<time datetime>``)."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def human_time(value: datetime | None) -> str:
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return f"{value.day} {value:%b %Y, %H:%M} UTC"


def plural(count: int, word: str, many: str | None = None) -> str:
    return f"{count} {word if count == 1 else (many or word + 's')}"


def safe_html(fragment: str | None, page_url: str | None = None) -> Markup:
    """Article HTML for a page: sanitised here, whatever was stored."""
    if not fragment:
        return Markup("")
    return Markup(sanitize_html(fragment, base_url=http_url(page_url)))  # noqa: S704 - sanitised


def why_joined(article: Article) -> str | None:
    """The clustering's reason in words, with the score when it means something."""
    if not article.signal:
        return None
    text = SIGNAL_TEXT.get(article.signal, article.signal.replace("_", " "))
    if article.copy_of is not None:
        text += f" #{article.copy_of}"
    if article.score is not None:
        if article.signal == "new" and article.score > 0:
            text += f"; closest other story scored {article.score:.2f}"
        elif article.signal == "similar":
            text += f", score {article.score:.2f}"
    return text


def feed_name(feed: Feed) -> str:
    return feed.title or feed.url


def story_sources(story: Story) -> str:
    return ", ".join(story.sources) if story.sources else "unknown source"


def register_template_helpers(app: Flask) -> None:
    app.add_template_filter(iso, "iso")
    app.add_template_filter(human_time, "human")
    app.add_template_filter(http_url, "http_url")
    app.add_template_filter(safe_html, "safe_html")
    app.add_template_global(plural, "plural")
    app.add_template_global(why_joined, "why_joined")
    app.add_template_global(feed_name, "feed_name")
    app.add_template_global(story_sources, "story_sources")
    app.jinja_env.globals["version"] = __version__
