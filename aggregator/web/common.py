"""Helpers shared by the blueprints: the app's context, the public base URL,
query-string parsing, and the Jinja filters.

Must not: query storage itself, or mark anything safe for HTML except the
output of ``aggregator.text.sanitize_html``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta

from flask import Flask, abort, current_app, request, session
from markupsafe import Markup, escape

from aggregator import __version__
from aggregator.config import Settings
from aggregator.models import Article, Feed, Story
from aggregator.publish import http_url
from aggregator.storage import Storage
from aggregator.text import sanitize_html
from aggregator.web.cache import RenderCache

MAX_PAGE = 1_000_000
MAX_MIN_SOURCES = 1000
MAX_API_PAGE_SIZE = 200
ORDERS = ("updated", "sources")
MAX_QUERY_LENGTH = 200
MAX_OPERATOR_NAME = 64

# The river's time ranges: key in the query string -> (label, span of latest activity).
RANGES: dict[str, tuple[str, timedelta]] = {
    "1h": ("last hour", timedelta(hours=1)),
    "6h": ("last 6 hours", timedelta(hours=6)),
    "24h": ("last 24 hours", timedelta(hours=24)),
    "3d": ("last 3 days", timedelta(days=3)),
    "7d": ("last 7 days", timedelta(days=7)),
    "30d": ("last 30 days", timedelta(days=30)),
}

# How the clustering's decision reads to a person ("why it joined"); the
# signals are those of ``aggregator.cluster`` and ``aggregator.ingest``.
SIGNAL_TEXT: dict[str, str] = {
    "new": "started this story",
    "empty": "started this story (no text to compare)",
    "copy": "copy of article",
    "same_url": "same link as article",
    "similar": "similar text",
    "semantic": "similar meaning",
    "split": "split out of another story by an operator",
}


def settings() -> Settings:
    found: Settings = current_app.extensions["aggregator"].settings
    return found


def storage() -> Storage:
    found: Storage = current_app.extensions["aggregator"].storage
    return found


def render_cache() -> RenderCache:
    found: RenderCache = current_app.extensions["aggregator"].renders
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


def optional_int_arg(name: str, *, maximum: int = 2**31 - 1) -> int | None:
    """A positive integer query parameter that may be absent (or empty)."""
    if not request.args.get(name, "").strip():
        return None
    return int_arg(name, 1, maximum=maximum)


def text_arg(name: str, *, maximum: int = MAX_QUERY_LENGTH) -> str | None:
    """A free-text query parameter, whitespace-collapsed; None when absent or blank."""
    value = " ".join(request.args.get(name, "").split())
    if not value:
        return None
    if len(value) > maximum:
        abort(400, description=f"{name} is too long (at most {maximum} characters)")
    if not value.isprintable():
        abort(400, description=f"{name} must not contain control characters")
    return value


def range_arg() -> str | None:
    value = request.args.get("range", "").strip()
    if not value or value == "all":
        return None
    if value not in RANGES:
        abort(400, description=f"range must be one of: all, {', '.join(RANGES)}")
    return value


def utcnow() -> datetime:
    return datetime.now(UTC)


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


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """A short relative time: "just now", "12 min ago", "3 h ago", "2 days ago",
    "in 5 min"; the date itself beyond two months."""
    if value is None:
        return "never"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    now = now or utcnow()
    seconds = (now - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return "just now" if not future else "in under a minute"
    if seconds < 3600:
        amount = f"{int(seconds // 60)} min"
    elif seconds < 48 * 3600:
        amount = f"{int(seconds // 3600)} h"
    elif seconds < 60 * 86400:
        amount = f"{int(seconds // 86400)} days"
    else:
        value = value.astimezone(UTC)
        return f"{value.day} {value:%b %Y}"
    return f"in {amount}" if future else f"{amount} ago"


def time_tag(value: datetime | None, now: datetime | None = None, *, relative: bool = False) -> Markup:
    """``<time datetime>`` with the UTC time (or a relative one, the UTC time in a
    tooltip); ``static/app.js`` rewrites absolute times to the reader's zone and
    puts the local time in the tooltip of relative ones."""
    if value is None:
        return Markup("never")
    stamp = escape(iso(value))
    if relative:
        return Markup('<span class="when" title="{title}"><time datetime="{stamp}">{text}</time></span>').format(
            title=human_time(value), stamp=stamp, text=ago(value, now)
        )
    return Markup('<time datetime="{stamp}">{text}</time>').format(stamp=stamp, text=human_time(value))


def offset_text(seconds: float) -> str:
    """How long after the first report: "+35 min", "+3 h 10 min", "+2 days"."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "+0 min"
    if minutes < 60:
        return f"+{minutes} min"
    hours, rest = divmod(minutes, 60)
    if hours < 48:
        return f"+{hours} h {rest} min" if rest else f"+{hours} h"
    return f"+{hours // 24} days"


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.0f} %"


# --------------------------------------------------------------------------- operators


def session_secret(settings_: Settings) -> bytes:
    """The session-signing key: derived from the API token (so a new token signs
    everyone out), random per process when there is no token (no one can sign in)."""
    if not settings_.api_token:
        return secrets.token_bytes(32)
    return hmac.new(settings_.api_token.encode("utf-8"), b"aggregator web session v1", hashlib.sha256).digest()


def token_fingerprint() -> str:
    token = settings().api_token or ""
    return hashlib.sha256(b"fingerprint:" + token.encode("utf-8")).hexdigest()[:16]


def operator() -> str | None:
    """The signed-in operator's name, or None."""
    if not settings().api_token:
        return None
    name = session.get("operator")
    if not isinstance(name, str) or session.get("tk") != token_fingerprint():
        return None
    return name


def check_token(given: str) -> bool:
    token = settings().api_token
    return bool(token) and hmac.compare_digest(given.encode("utf-8"), (token or "").encode("utf-8"))


def csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def check_csrf() -> None:
    """400 unless the form carries the session's CSRF token."""
    expected = session.get("csrf")
    given = request.form.get("csrf_token", "")
    if not isinstance(expected, str) or not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        abort(400, description="The form has expired or did not come from this site. Reload the page and try again.")


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
        elif article.signal in ("similar", "semantic"):
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
    app.add_template_global(time_tag, "time_tag")
    app.add_template_global(operator, "operator")
    app.add_template_global(csrf_token, "csrf_token")
    app.add_template_filter(ago, "ago")
    app.add_template_filter(percent, "percent")
    app.jinja_env.globals["version"] = __version__
