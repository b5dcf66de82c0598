"""WebSub (W3C Recommendation, 23 January 2018): aggregator is the hub of its own feeds.

Every published feed advertises ``<link rel="hub" href="{base}/websub">`` and
its ``rel="self"`` topic. A hub-aware reader subscribes at ``POST /websub``
(:mod:`aggregator.web.websub`); the hub verifies the intent with a GET to the
reader's callback, and from then on POSTs the whole current feed document to
the callback whenever the topic's content changes, until the lease ends.

Topics are our own feeds only, recognised by parsing the URL against the base
URL and the routes (:func:`parse_topic`): the river ``/feed.atom`` and
``/feed.rss`` with their filters (``min_sources``, ``q``, ``feed``,
``folder``), and a story's ``/stories/<id>/feed.atom`` and ``.rss``; first
pages only (``page`` absent or 1).

What happens where
    * The web view validates a request (:func:`parse_request`, pure), stores
      it, answers 202 Accepted (or 4xx with the reason) and does no network I/O.
    * :class:`Hub` is the worker (a thread with a stop event, or ``run_once``
      called by a scheduler job). Each run, from the database:

      1. verifies waiting requests: GET to the callback with ``hub.mode``,
         ``hub.topic``, ``hub.challenge`` (and ``hub.lease_seconds``); only a
         2xx answer whose body is exactly the challenge activates (or renews,
         or ends) the subscription;
      2. removes subscriptions whose lease has ended;
      3. finds topics whose content changed: stories named by
         :meth:`Hub.story_changed` plus the stories whose ``updated_at`` moved
         since the last run (so changes made by another process, e.g. ``aggregator
         update`` beside the daemon, are found too). A topic's *version* is a
         cheap validator computed like the feed's ETag (no article is read);
         each subscription keeps the version it was sent, and one whose version
         differs gets a delivery queued;
      4. sends due deliveries: the topic's current feed is rendered by
         :mod:`aggregator.publish` (the same functions the web view uses) and
         POSTed with its Content-Type, ``Link: <hub>; rel="hub", <topic>;
         rel="self"`` and, when the subscriber gave a secret,
         ``X-Hub-Signature: sha256=<hex HMAC of the body>``. A 2xx is success;
         410 Gone ends the subscription; anything else (or a network error)
         is retried with exponential back-off (:func:`retry_delay`) up to
         ``websub_max_attempts`` attempts, then the delivery is dropped and
         logged (the subscription stays; its next change is sent again).

Callbacks are reached with the fetcher's address rules: the guarded client of
:func:`aggregator.fetch.make_client` checks, at connect time, every address the
host resolves to, and refuses loopback, private, link-local... addresses unless
``allow_private``; responses are bounded in time (``websub_timeout``) and size.
Redirects are not followed (a callback that redirects has failed).

What it must not do: know about Flask or requests (the web view calls
:func:`parse_request`), or import httpx (the fetcher's client is used through
its own methods).

Decisions are pure functions, tested as such: :func:`parse_topic`,
:func:`callback_problem`, :func:`lease_seconds`, :func:`parse_request`,
:func:`signature`, :func:`retry_delay`, :func:`next_attempt`,
:func:`verification_url`, :func:`challenge_accepted`, :func:`link_header`,
:func:`story_version`, :func:`river_version`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aggregator import fetch as fetch_module
from aggregator import publish
from aggregator.config import Settings
from aggregator.logs import event
from aggregator.models import Story
from aggregator.storage import Storage, StorageError
from aggregator.storage.facade import StoryFilter
from aggregator.storage.websub import (
    WebSubDelivery,
    WebSubRequest,
    WebSubSubscription,
)

log = logging.getLogger(__name__)

HUB_PATH = publish.HUB_PATH
MODES = ("subscribe", "unsubscribe")
MIN_LEASE_SECONDS = 60
MAX_SECRET_BYTES = 199  # "hub.secret ... MUST be less than 200 bytes in length"
MAX_URL_LENGTH = 2048  # what storage holds
MAX_RESPONSE_BYTES = 64 * 1024  # of a verification answer; delivery answers are not read
MAX_RETRY_DELAY = 3600.0
MAX_PENDING_REQUESTS = 10_000  # requests waiting for verification, all subscribers together
SCAN_OVERLAP = timedelta(seconds=120)  # stories.updated_at written by slow transactions or other clocks
BATCH = 100  # requests or deliveries taken per run

# River filters, as aggregator.web.atom / aggregator.web.common read them.
MAX_MIN_SOURCES = 1000
MAX_TEXT_LENGTH = 200
MAX_ID = 2**31 - 1
RIVER_PARAMS = ("min_sources", "q", "feed", "folder")

_ROUTE = re.compile(r"/(?:stories/(?P<story>[0-9]{1,10})/)?feed\.(?P<fmt>atom|rss)")


class RequestError(ValueError):
    """A subscription request the hub refuses; ``reason`` says why, for the subscriber."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class CallbackError(Exception):
    """A request to a subscriber's callback failed; ``message`` says how."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------- topics


@dataclass(frozen=True)
class Topic:
    """One of our feeds, as a subscription topic."""

    kind: Literal["river", "story"]
    fmt: publish.Format
    base_url: str  # scheme://host[:port][/prefix] of the topic, without trailing slash
    story_id: int | None = None
    min_sources: int = 1
    q: str | None = None
    feed_id: int | None = None
    folder: str | None = None

    def canonical_query(self) -> list[tuple[str, str]]:
        """The river's filters in the web view's canonical order, defaults left out."""
        found = (
            ("min_sources", self.min_sources if self.min_sources > 1 else None),
            ("q", self.q),
            ("feed", self.feed_id),
            ("folder", self.folder),
        )
        return [(name, str(value)) for name, value in found if value is not None]

    @property
    def key(self) -> tuple[object, ...]:
        """Topics with the same key have the same content."""
        return (self.kind, self.fmt, self.story_id, tuple(self.canonical_query()))

    def story_filter(self) -> StoryFilter:
        return StoryFilter(
            min_sources=self.min_sources, feed_id=self.feed_id, folder=self.folder, text=self.q
        )

    def url(self, base_url: str | None = None) -> str:
        """The canonical URL of this feed (its ``rel="self"``)."""
        base = (base_url or self.base_url).rstrip("/")
        if self.kind == "story":
            assert self.story_id is not None
            return publish.story_feed_url(base, self.story_id, self.fmt)
        query = urlencode(self.canonical_query())
        return f"{base}/feed.{self.fmt}" + (f"?{query}" if query else "")


def _origin(parts: Any) -> tuple[str, str, int] | None:
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None
    return scheme, host, port or (443 if scheme == "https" else 80)


def _whole_number(name: str, value: str, maximum: int) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 10 or not 1 <= int(value) <= maximum:
        raise RequestError(f"hub.topic: {name} must be a whole number between 1 and {maximum}")
    return int(value)


def _text(name: str, value: str) -> str | None:
    text = " ".join(value.split())
    if not text:
        return None
    if len(text) > MAX_TEXT_LENGTH:
        raise RequestError(f"hub.topic: {name} is too long (at most {MAX_TEXT_LENGTH} characters)")
    if not text.isprintable():
        raise RequestError(f"hub.topic: {name} must not contain control characters")
    return text


def parse_topic(topic: str, base_url: str | None = None) -> Topic:
    """The feed ``topic`` names, or :class:`RequestError` saying why it is not one of ours.

    With ``base_url`` (the hub's public base URL), the topic must lie under it
    (same scheme, host and port; the base's path is a prefix). Without, the
    base is derived from the topic itself (the part before the route).
    """
    if not topic:
        raise RequestError("hub.topic is missing")
    if len(topic) > MAX_URL_LENGTH:
        raise RequestError(f"hub.topic is too long (at most {MAX_URL_LENGTH} characters)")
    if not topic.isprintable() or any(ch.isspace() for ch in topic):
        raise RequestError("hub.topic must be a URL without spaces or control characters")
    try:
        parts = urlsplit(topic)
        origin = _origin(parts)
    except ValueError:
        origin = None
    if origin is None:
        raise RequestError("hub.topic must be an http(s) URL of one of this hub's feeds")
    if parts.fragment:
        raise RequestError("hub.topic must not have a #fragment")
    match = _ROUTE.search(parts.path)
    if match is None or match.end() != len(parts.path):
        raise RequestError(_not_ours(base_url))
    prefix = parts.path[: match.start()]
    if base_url is not None:
        base = urlsplit(base_url.rstrip("/"))
        if _origin(base) != origin or prefix != base.path.rstrip("/"):
            raise RequestError(_not_ours(base_url))
    derived = urlunsplit((parts.scheme.lower(), parts.netloc.lower(), prefix, "", ""))
    fmt: publish.Format = "atom" if match.group("fmt") == "atom" else "rss"
    params: dict[str, str] = {}
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in params:
            raise RequestError(f"hub.topic: {name} is given twice")
        params[name] = value
    page = params.pop("page", "1").strip() or "1"
    if page != "1":
        raise RequestError("hub.topic must be the first page of a feed (no page parameter)")
    if match.group("story") is not None:
        if params:
            raise RequestError(
                f"hub.topic: a story's feed takes no parameters (got {', '.join(sorted(params))})"
            )
        story_id = _whole_number("the story id", match.group("story"), MAX_ID)
        return Topic(kind="story", fmt=fmt, base_url=derived, story_id=story_id)
    unknown = sorted(set(params) - set(RIVER_PARAMS))
    if unknown:
        raise RequestError(
            f"hub.topic: unknown parameter {', '.join(unknown)} (the feed of stories takes "
            f"{', '.join(RIVER_PARAMS)})"
        )
    min_sources = params.get("min_sources", "").strip()
    feed = params.get("feed", "").strip()
    return Topic(
        kind="river",
        fmt=fmt,
        base_url=derived,
        min_sources=_whole_number("min_sources", min_sources, MAX_MIN_SOURCES) if min_sources else 1,
        q=_text("q", params.get("q", "")),
        feed_id=_whole_number("feed", feed, MAX_ID) if feed else None,
        folder=_text("folder", params.get("folder", "")),
    )


def _not_ours(base_url: str | None) -> str:
    base = (base_url or "").rstrip("/")
    return (
        "hub.topic is not a feed of this hub: it must be one of "
        f"{base}/feed.atom (or .rss, with min_sources, q, feed, folder) or {base}/stories/<id>/feed.atom (or .rss)"
    )


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class SubscriptionRequest:
    """A valid subscribe or unsubscribe request."""

    mode: Literal["subscribe", "unsubscribe"]
    topic: str  # as the subscriber gave it (the verification echoes it)
    parsed: Topic
    callback: str
    lease_seconds: int  # granted (subscribe); 0 for unsubscribe
    secret: str | None


def callback_problem(callback: str, *, allow_private: bool) -> str | None:
    """Why ``callback`` cannot be a subscriber's callback, or None.

    Host names are checked after DNS resolution, when the hub connects (the
    guarded client); here only what needs no network: the URL's form, and IP
    literals and ``localhost`` when private addresses are not allowed.
    """
    if not callback:
        return "hub.callback is missing"
    if len(callback) > MAX_URL_LENGTH:
        return f"hub.callback is too long (at most {MAX_URL_LENGTH} characters)"
    if not callback.isprintable() or any(ch.isspace() for ch in callback):
        return "hub.callback must be a URL without spaces or control characters"
    try:
        parts = urlsplit(callback)
        origin = _origin(parts)
    except ValueError:
        origin = None
    if origin is None:
        return "hub.callback must be an http or https URL with a host"
    if parts.fragment:
        return "hub.callback must not have a #fragment"
    host = origin[1]
    if not allow_private:
        if host == "localhost" or host.endswith(".localhost"):
            return f"hub.callback {host} is a loopback address; this hub calls public addresses only"
        literal = host.strip("[]")
        if _is_ip(literal) and not fetch_module.is_public_address(literal):
            return f"hub.callback {literal} is a private address; this hub calls public addresses only"
    return None


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def lease_seconds(requested: str | None, settings: Settings) -> int:
    """The lease granted: the request's ``hub.lease_seconds`` (default
    ``websub_default_lease``) within [``MIN_LEASE_SECONDS``, ``websub_max_lease``]."""
    text = (requested or "").strip()
    if not text:
        wanted = settings.websub_default_lease
    elif not text.isascii() or not text.isdigit() or len(text) > 12:
        raise RequestError("hub.lease_seconds must be a whole number of seconds")
    else:
        wanted = int(text)
    return max(MIN_LEASE_SECONDS, min(wanted, settings.websub_max_lease))


def parse_request(form: Mapping[str, str], *, base_url: str, settings: Settings) -> SubscriptionRequest:
    """A subscription request from the form fields of ``POST /websub``, or
    :class:`RequestError` with the reason to answer."""
    mode = (form.get("hub.mode") or "").strip()
    if not mode:
        raise RequestError("hub.mode is missing (subscribe or unsubscribe)")
    if mode == "publish":
        raise RequestError("hub.mode=publish is not accepted: this hub publishes only its own feeds")
    if mode not in MODES:
        raise RequestError("hub.mode must be subscribe or unsubscribe")
    topic = form.get("hub.topic") or ""
    parsed = parse_topic(topic, base_url)
    callback = form.get("hub.callback") or ""
    problem = callback_problem(callback, allow_private=settings.allow_private)
    if problem is not None:
        raise RequestError(problem)
    if mode == "unsubscribe":
        return SubscriptionRequest("unsubscribe", topic, parsed, callback, 0, None)
    secret = form.get("hub.secret") or None
    if secret is not None and len(secret.encode("utf-8")) > MAX_SECRET_BYTES:
        raise RequestError(f"hub.secret must be shorter than 200 bytes (got {len(secret.encode('utf-8'))})")
    lease = lease_seconds(form.get("hub.lease_seconds"), settings)
    return SubscriptionRequest("subscribe", topic, parsed, callback, lease, secret)


# --------------------------------------------------------------------------- small pure helpers


hub_url = publish.hub_url  # the hub every feed under a base URL advertises (``<link rel="hub">``)


link_header = publish.link_header  # the ``Link`` header of a content distribution


def signature(secret: str, body: bytes) -> str:
    """``X-Hub-Signature`` of a content distribution: ``sha256=<hex HMAC of the body>``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def retry_delay(attempts: int, settings: Settings) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt: ``websub_retry_seconds``,
    doubling with each attempt, at most ``MAX_RETRY_DELAY``."""
    return min(settings.websub_retry_seconds * 2 ** min(max(attempts - 1, 0), 30), MAX_RETRY_DELAY)


def next_attempt(attempts: int, now: datetime, settings: Settings) -> datetime | None:
    """When to try again after ``attempts`` failed attempts; None: give up (drop it)."""
    if attempts >= settings.websub_max_attempts:
        return None
    return now + timedelta(seconds=retry_delay(attempts, settings))


def verification_url(callback: str, mode: str, topic: str, challenge: str, lease: int | None) -> str:
    """The callback with the verification parameters added to its own query."""
    parts = urlsplit(callback)
    params = [("hub.mode", mode), ("hub.topic", topic), ("hub.challenge", challenge)]
    if lease is not None:
        params.append(("hub.lease_seconds", str(lease)))
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit(parts._replace(query=query))


def challenge_accepted(status: int, body: bytes, challenge: str) -> bool:
    """The subscriber confirmed: a 2xx answer whose body is exactly the challenge."""
    return 200 <= status < 300 and body == challenge.encode("ascii")


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr((publish.FORMAT_VERSION, *parts)).encode("utf-8")).hexdigest()


def story_version(topic: Topic, story: Story, per_page: int) -> str:
    """A story feed's validator: changes whenever its first page can."""
    return _digest("story", topic.fmt, story.id, story.updated_at.isoformat(), story.article_count, per_page)


def river_version(topic: Topic, total: int, listed: Sequence[Story], per_page: int) -> str:
    """A river feed's validator, from the stories on its first page."""
    shown = [(story.id, story.updated_at.isoformat(), story.article_count) for story in listed]
    return _digest("river", topic.fmt, topic.canonical_query(), total, per_page, shown)


def river_title(topic: Topic, feed_name: str | None) -> str:
    return publish.river_title(min_sources=topic.min_sources, feed_name=feed_name, folder=topic.folder, text=topic.q)


# --------------------------------------------------------------------------- reading topics


@dataclass(frozen=True)
class Rendered:
    body: bytes
    content_type: str
    version: str


def _live_story(storage: Storage, story_id: int) -> Story | None:
    record = storage.story_record(story_id)
    if record is not None and record.merged_into is not None:  # the feed redirects to the survivor
        record = storage.story_record(record.merged_into)
    return record


def topic_version(storage: Storage, settings: Settings, topic: Topic) -> str | None:
    """The topic's current validator (no article read); None when it has no content."""
    per_page = settings.feed_max_entries
    if topic.kind == "story":
        assert topic.story_id is not None
        story = _live_story(storage, topic.story_id)
        return None if story is None else story_version(topic, story, per_page)
    if topic.feed_id is not None and storage.get_feed(topic.feed_id) is None:
        return None
    page = storage.find_stories(topic.story_filter(), limit=per_page)
    return river_version(topic, page.total, page.stories, per_page)


def render_topic(storage: Storage, settings: Settings, topic: Topic) -> Rendered | None:
    """The topic's first page as the web view serves it; None when it has no content."""
    base = (settings.base_url or topic.base_url).rstrip("/")
    per_page = settings.feed_max_entries
    content_type = f"{publish.MIMETYPES[topic.fmt]}; charset=utf-8"
    if topic.kind == "story":
        assert topic.story_id is not None
        record = _live_story(storage, topic.story_id)
        found = None if record is None else storage.get_story(record.id)
        if found is None or found.story.merged_into is not None:
            return None
        renderer = publish.story_feed if topic.fmt == "atom" else publish.story_feed_rss
        body = renderer(found, base_url=base, max_entries=per_page, page=1)
        return Rendered(body, content_type, story_version(topic, found.story, per_page))
    feed_name = None
    if topic.feed_id is not None:
        feed = storage.get_feed(topic.feed_id)
        if feed is None:
            return None
        feed_name = feed.title or feed.url
    page = storage.find_stories(topic.story_filter(), limit=per_page)
    stories = []
    for story in page.stories:
        found = storage.get_story(story.id)
        if found is not None and found.story.merged_into is None:
            stories.append(found)
    query = urlencode(topic.canonical_query())
    feed_url = topic.url(base)
    pages = publish.page_count(page.total, per_page)
    render_river = publish.stories_feed if topic.fmt == "atom" else publish.stories_feed_rss
    body = render_river(
        stories,
        base_url=base,
        title=river_title(topic, feed_name),
        self_url=publish.with_page(feed_url, 1),
        alternate_url=f"{base}/" + (f"?{query}" if query else ""),
        updated=max((story.updated_at for story in page.stories), default=publish.EPOCH),
        paging=publish.Paging.of(1, pages, lambda number: publish.with_page(feed_url, number)),
    )
    return Rendered(body, content_type, river_version(topic, page.total, page.stories, per_page))


# --------------------------------------------------------------------------- calling callbacks


@dataclass(frozen=True)
class CallbackResponse:
    status: int
    body: bytes  # at most max_bytes


def call(
    client: Any,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: bytes | None = None,
    timeout: float,
    allow_private: bool,
    max_bytes: int = MAX_RESPONSE_BYTES,
) -> CallbackResponse:
    """One request to a subscriber's callback with the fetcher's guarded client
    (``client`` comes from :func:`aggregator.fetch.make_client`): the address
    rules apply at connect time, ``timeout`` bounds the whole exchange, at
    most ``max_bytes`` of the answer are read, redirects are not followed.
    Raises :class:`CallbackError`."""
    guard = fetch_module._Guard(
        deadline=time.monotonic() + timeout, timeout=timeout, allow_private=allow_private
    )
    token = fetch_module._GUARD.set(guard)
    try:
        request = client.build_request(method, url, headers=dict(headers), content=body, timeout=timeout)
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            data = bytearray()
            if max_bytes > 0:
                for chunk in response.iter_raw():
                    data += chunk
                    if len(data) > max_bytes:
                        raise CallbackError(f"answer larger than {fetch_module.format_size(max_bytes)}")
                    if guard.remaining() <= 0:
                        raise CallbackError(f"timed out after {timeout:g} s")
            return CallbackResponse(response.status_code, bytes(data))
        finally:
            response.close()
    except CallbackError:
        raise
    except fetch_module.FetchError as exc:
        raise CallbackError(exc.message) from exc
    except Exception as exc:  # httpx's errors: connection refused, timeouts, protocol errors
        if "timeout" in type(exc).__name__.lower():
            raise CallbackError(f"timed out after {timeout:g} s") from exc
        reason = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc)).strip() or type(exc).__name__
        raise CallbackError(f"{type(exc).__name__}: {reason}") from exc
    finally:
        fetch_module._GUARD.reset(token)


# --------------------------------------------------------------------------- the worker


@dataclass
class HubReport:
    """What one run of the worker did."""

    verified: int = 0  # requests confirmed by their subscriber and applied
    refused: int = 0  # requests whose verification failed
    expired: int = 0  # subscriptions whose lease ended
    queued: int = 0  # deliveries queued for changed topics
    delivered: int = 0
    retried: int = 0
    dropped: int = 0
    gone: int = 0  # subscriptions ended by a 410 Gone answer


class Hub:
    """The verification and delivery worker (see the module docstring).

    ``start()`` runs it in a thread, every ``websub_poll_seconds`` and at once
    when woken (:meth:`story_changed`, :meth:`wake`); ``stop()`` ends it.
    ``run_once(now)`` is one run, for a scheduler job or a test.
    """

    def __init__(self, settings: Settings, storage: Storage, *, client: Any = None) -> None:
        self.settings = settings
        self.storage = storage
        self._own_client = client is None
        self._client = (
            client
            if client is not None
            else fetch_module.make_client(max_connections=max(2, settings.websub_workers * 2))
        )
        self._pool = ThreadPoolExecutor(max_workers=settings.websub_workers, thread_name_prefix="websub")
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._changed: set[int] = set()
        self._scanned_at: datetime | None = None  # wall clock of the last scan of stories.updated_at
        self._seen: dict[int, datetime] = {}  # stories seen by the last scan, with their updated_at
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ hooks

    def story_changed(self, story_ids: Iterable[int]) -> None:
        """Call with the ids of stories that changed (articles joined, merged,
        split, updated): their feeds and the river feeds are distributed at the
        worker's next run, which this starts at once. Cheap and thread-safe;
        changes this is not told about are still found within
        ``websub_poll_seconds`` (the worker watches ``stories.updated_at``)."""
        ids = {int(story_id) for story_id in story_ids}
        if ids:
            with self._lock:
                self._changed |= ids
            self._wake.set()

    def wake(self) -> None:
        """Run now (e.g. a request is waiting for verification)."""
        self._wake.set()

    # ------------------------------------------------------------------ thread

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="websub-hub", daemon=True)
        self._thread.start()
        event(log, "websub_started", poll_seconds=self.settings.websub_poll_seconds)

    def stop(self, timeout: float | None = None) -> None:
        """Stop the thread (the run in flight finishes) and release the client."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._pool.shutdown(wait=True)
        if self._own_client:
            self._client.close()

    close = stop

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except StorageError as exc:
                event(log, "websub_run", logging.ERROR, outcome="error", error=str(exc))
            except Exception:
                log.exception("websub run failed (unexpected)")
            self._wake.wait(self.settings.websub_poll_seconds)
            self._wake.clear()

    # ------------------------------------------------------------------ one run

    def run_once(self, now: datetime | None = None) -> HubReport:
        """Verify waiting requests, end expired leases, queue deliveries for
        changed topics and send the due ones. ``now`` is for tests (leases and
        back-off); the scan of changed stories always uses the wall clock."""
        with self._run_lock:
            now = now or datetime.now(UTC)
            report = HubReport()
            self._verify_requests(now, report)
            self._expire(now, report)
            self._queue_changes(now, report)
            self._deliver(now, report)
            return report

    # verification ------------------------------------------------------

    def _verify_requests(self, now: datetime, report: HubReport) -> None:
        taken = [
            item for item in self.storage.websub_requests(BATCH) if self.storage.websub_take_request(item.id)
        ]
        for outcome in self._pool.map(lambda item: self._verify(item, now), taken):
            if outcome:
                report.verified += 1
            else:
                report.refused += 1

    def _verify(self, request: WebSubRequest, now: datetime) -> bool:
        fields: dict[str, Any] = {"mode": request.mode, "topic": request.topic, "callback": request.callback}
        try:
            topic = parse_topic(request.topic)
        except RequestError as exc:  # cannot happen for a request the web view accepted
            event(log, "websub_verify", logging.WARNING, outcome="refused", error=exc.reason, **fields)
            return False
        problem = callback_problem(request.callback, allow_private=self.settings.allow_private)
        if problem is not None:
            event(log, "websub_verify", logging.WARNING, outcome="refused", error=problem, **fields)
            return False
        challenge = secrets.token_urlsafe(32)
        lease = request.lease_seconds if request.mode == "subscribe" else None
        url = verification_url(request.callback, request.mode, request.topic, challenge, lease)
        headers = {
            "User-Agent": self.settings.user_agent,
            "Accept": "text/plain, */*;q=0.1",
            "Accept-Encoding": "identity",
        }
        try:
            answer = call(
                self._client,
                "GET",
                url,
                headers=headers,
                timeout=self.settings.websub_timeout,
                allow_private=self.settings.allow_private,
            )
        except CallbackError as exc:
            event(log, "websub_verify", logging.WARNING, outcome="failed", error=exc.message, **fields)
            return False
        if not challenge_accepted(answer.status, answer.body, challenge):
            error = (
                f"HTTP {answer.status}" if not 200 <= answer.status < 300 else "the challenge was not echoed"
            )
            event(log, "websub_verify", logging.WARNING, outcome="failed", error=error, **fields)
            return False
        if request.mode == "unsubscribe":
            removed = self.storage.websub_remove(request.topic, request.callback)
            event(log, "websub_verify", outcome="unsubscribed", existed=removed, **fields)
            return True
        version = topic_version(self.storage, self.settings, topic)
        expires = now + timedelta(seconds=request.lease_seconds)
        subscription, new = self.storage.websub_activate(
            request, now=now, expires_at=expires, version=version
        )
        event(
            log,
            "websub_verify",
            outcome="subscribed" if new else "renewed",
            lease_seconds=request.lease_seconds,
            expires_at=subscription.expires_at.isoformat(),
            **fields,
        )
        return True

    # leases ------------------------------------------------------------

    def _expire(self, now: datetime, report: HubReport) -> None:
        for subscription in self.storage.websub_expire(now):
            report.expired += 1
            event(log, "websub_expired", topic=subscription.topic, callback=subscription.callback)

    # changes -----------------------------------------------------------

    def _queue_changes(self, now: datetime, report: HubReport) -> None:
        with self._lock:
            named, self._changed = self._changed, set()
        scan_started = datetime.now(UTC)
        if self._scanned_at is None:  # first run: compare every subscription once
            candidates = self.storage.websub_active(now)
            self._seen = {}
        else:
            rows = self.storage.stories_changed_since(self._scanned_at - SCAN_OVERLAP)
            fresh = {story_id for story_id, updated in rows if self._seen.get(story_id) != updated}
            self._seen = dict(rows)
            ids = named | fresh
            candidates = self.storage.websub_active(now, story_ids=ids, river=True) if ids else []
        self._scanned_at = scan_started
        groups: dict[tuple[object, ...], tuple[Topic, list[WebSubSubscription]]] = {}
        for subscription in candidates:
            try:
                topic = parse_topic(subscription.topic)
            except RequestError:
                continue
            groups.setdefault(topic.key, (topic, []))[1].append(subscription)
        due: list[int] = []
        for topic, members in groups.values():
            version = topic_version(self.storage, self.settings, topic)
            due += [s.id for s in members if s.version != version and not s.pending]
        if due:
            report.queued += self.storage.websub_enqueue(due, now=now)

    # deliveries --------------------------------------------------------

    def _deliver(self, now: datetime, report: HubReport) -> None:
        deadline = now + timedelta(seconds=self.settings.websub_timeout * 2 + 60)
        claimed = [
            item
            for item in self.storage.websub_due_deliveries(now, BATCH)
            if self.storage.websub_claim_delivery(item, now=now, until=deadline)
        ]
        if not claimed:
            return
        rendered: dict[tuple[object, ...], tuple[Topic, Rendered | None]] = {}
        work: list[tuple[WebSubDelivery, Topic | None, Rendered | None]] = []
        for item in claimed:
            try:
                topic = parse_topic(item.subscription.topic)
            except RequestError:
                work.append((item, None, None))
                continue
            if topic.key not in rendered:
                rendered[topic.key] = (topic, render_topic(self.storage, self.settings, topic))
            work.append((item, topic, rendered[topic.key][1]))
        for outcome in self._pool.map(lambda job: self._send(job[0], job[1], job[2], now), work):
            setattr(report, outcome, getattr(report, outcome) + 1)

    def _send(
        self, delivery: WebSubDelivery, topic: Topic | None, document: Rendered | None, now: datetime
    ) -> str:
        subscription = delivery.subscription
        fields: dict[str, Any] = {"topic": subscription.topic, "callback": subscription.callback}
        if topic is None or document is None:  # the story is gone (retention): nothing to send
            # Its version is None now (see topic_version): recorded, it is not queued again.
            self.storage.websub_drop(delivery, version=None)
            event(
                log,
                "websub_delivery",
                logging.WARNING,
                outcome="dropped",
                error="the topic has no content",
                **fields,
            )
            return "dropped"
        hub = hub_url(self.settings.base_url or topic.base_url)
        headers = {
            "Content-Type": document.content_type,
            "Link": link_header(hub, subscription.topic),
            "User-Agent": self.settings.user_agent,
        }
        if subscription.secret:
            headers["X-Hub-Signature"] = signature(subscription.secret, document.body)
        attempt = delivery.attempts + 1
        error: str
        try:
            answer = call(
                self._client,
                "POST",
                subscription.callback,
                headers=headers,
                body=document.body,
                timeout=self.settings.websub_timeout,
                allow_private=self.settings.allow_private,
                max_bytes=0,
            )
        except CallbackError as exc:
            error = exc.message
        else:
            if 200 <= answer.status < 300:
                self.storage.websub_delivered(delivery, version=document.version, now=now)
                event(
                    log, "websub_delivery", outcome="ok", attempt=attempt, bytes=len(document.body), **fields
                )
                return "delivered"
            if answer.status == 410:
                self.storage.websub_remove(subscription.topic, subscription.callback)
                event(log, "websub_delivery", outcome="gone", attempt=attempt, **fields)
                return "gone"
            error = f"HTTP {answer.status}"
        retry_at = next_attempt(attempt, now, self.settings)
        if retry_at is None:
            self.storage.websub_drop(delivery, version=document.version)
            event(
                log,
                "websub_delivery",
                logging.WARNING,
                outcome="dropped",
                attempt=attempt,
                error=error,
                **fields,
            )
            return "dropped"
        self.storage.websub_retry(delivery, attempts=attempt, due_at=retry_at, error=error)
        event(
            log,
            "websub_delivery",
            logging.WARNING,
            outcome="retry",
            attempt=attempt,
            error=error,
            retry_at=retry_at.isoformat(),
            **fields,
        )
        return "retried"
