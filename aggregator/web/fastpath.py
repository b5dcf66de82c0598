"""The hot path of the web service, answered before Flask: story feeds, and the
river for readers without a session.

Polling feed readers are most of the traffic, and most of their requests are
either conditional (answered ``304 Not Modified``) or for a feed whose current
rendering is already in the render cache (:mod:`aggregator.web.cache`). For
those two answers the whole work is one primary-key lookup of the story's
version (:func:`aggregator.storage.facade.story_version`), a hash and a
dictionary lookup; Flask's request context, URL routing, session handling and
response objects cost several times that, so this WSGI middleware answers them
itself:

* ``GET``/``HEAD /stories/<id>/feed.atom`` and ``.rss``, with no query string or
  only ``page=N``, when ``base_url`` is configured;
* ``304`` when ``If-None-Match`` (or, without it, ``If-Modified-Since``) matches,
  ``200`` when the body is in the render cache.

Everything else goes to Flask unchanged: a miss (Flask renders it and fills the
cache), an unknown or merged story (404, 301), a page past the last (404),
other parameters, other methods, and any storage error (Flask answers 503).
The validators, the headers and the bodies are those of :mod:`aggregator.web.atom`
(the same functions make them; ``tests/test_render_cache.py`` compares both paths
header by header), and requests are counted in the same metrics, under the same
route labels.

The river (``/``, ``/feed.atom``, ``/feed.rss``, any query) changes whenever any
story does, so its validator is two queries over the listed stories rather than
one key lookup (~1 CPU ms a request with Flask's own work). For readers without a
session cookie its answers are also kept for ``river_cache_seconds`` (default 1;
0: off) by :class:`RiverCache`, as a front proxy's micro-cache would: within that
time the same request gets the same answer (a ``200`` replayed, or ``304`` when
its ``If-None-Match`` names the kept ``ETag``) without a query; after it, Flask
validates again. A reader so sees a change to the river at most that late.
Only ``200`` and ``304`` answers that set no cookie are kept.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from werkzeug.http import http_date, is_resource_modified, remove_entity_headers

from aggregator import metrics, publish
from aggregator.storage import StorageError
from aggregator.storage.facade import story_version

_STORY_FEED = re.compile(r"/stories/([1-9][0-9]{0,8})/feed\.(atom|rss)\Z")
_PAGE_QUERY = re.compile(r"page=([1-9][0-9]{0,5})\Z")
_ROUTES = {"atom": "/stories/<int:story_id>/feed.atom", "rss": "/stories/<int:story_id>/feed.rss"}
_RIVER_PATHS = frozenset({"/", "/feed.atom", "/feed.rss"})  # also the routes' labels

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class FeedFastPath:
    """WSGI middleware: story feeds' 304s and cached 200s without Flask."""

    def __init__(self, app: Any, wsgi_app: WSGIApp) -> None:
        from aggregator.web import SECURITY_HEADERS, WebContext  # noqa: F401 (import cycle)

        self.app = app
        self.wsgi_app = wsgi_app
        self.context: WebContext = app.extensions["aggregator"]
        self.security = list(SECURITY_HEADERS.items())
        self._metrics: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self.river = RiverCache(self.context.settings.river_cache_seconds)
        # html.py's (set when its blueprint was registered); anywhere in Cookie: not kept
        self.session_cookie: str = app.config["SESSION_COOKIE_NAME"]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET" or method == "HEAD":
            path = environ.get("PATH_INFO", "")
            match = _STORY_FEED.match(path)
            if match is not None:
                started = time.perf_counter()
                try:
                    answer = self._answer(environ, int(match.group(1)), match.group(2))  # type: ignore[arg-type]
                except StorageError:
                    answer = None  # Flask answers (503 when the database is down)
                if answer is not None:
                    status, headers, body = answer
                    start_response(status, headers)
                    self._count(_ROUTES[match.group(2)], method, status[:3], time.perf_counter() - started)
                    return [body] if method == "GET" else []
            elif path in _RIVER_PATHS and self.river.enabled:
                return self._river(environ, start_response, path, method)
        return self.wsgi_app(environ, start_response)

    def _river(
        self, environ: dict[str, Any], start_response: StartResponse, path: str, method: str
    ) -> Iterable[bytes]:
        """The river from :class:`RiverCache`, or from Flask (and kept when it may be)."""
        if method != "GET" or self.session_cookie in environ.get("HTTP_COOKIE", ""):
            return self.wsgi_app(environ, start_response)  # an operator's page, flashed messages
        started = time.perf_counter()
        key = RiverCache.key(environ)
        if key is None or ("HTTP_IF_MODIFIED_SINCE" in environ and "HTTP_IF_NONE_MATCH" not in environ):
            # (a date alone is Flask's to compare: the kept answer is looked up by ETag)
            return self.wsgi_app(environ, start_response)
        kept = self.river.get(key)
        if kept is not None:
            answer = kept.answer(environ)
            if answer is not None:
                status, headers, body = answer
                start_response(status, list(headers))  # a copy: servers may append to it
                self._count(path, method, status[:3], time.perf_counter() - started)
                return [body]
        seen: list[Any] = []
        asked = time.monotonic()  # what Flask answers is the river as of (at least) now

        def keep_status(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen[:] = [status, headers]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        chunks = self.wsgi_app(environ, keep_status)
        try:
            body = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if seen:
            self.river.put(key, seen[0], seen[1], body, asked)
        return [body]

    def _count(self, route: str, method: str, status: str, seconds: float) -> None:
        """The metrics ``ops`` keeps for every request, with their labelled children kept."""
        key = (route, method, status)
        children = self._metrics.get(key)
        if children is None:
            children = (
                metrics.HTTP_REQUESTS.labels(route=route, method=method, status=status),
                metrics.HTTP_SECONDS.labels(route=route),
            )
            self._metrics[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def _answer(
        self, environ: dict[str, Any], story_id: int, fmt: publish.Format
    ) -> tuple[str, list[tuple[str, str]], bytes] | None:
        from aggregator.web.atom import CONTENT_TYPES, story_feed_etag

        settings = self.context.settings
        if not settings.base_url:
            return None  # the base URL comes from the request: Flask's rules
        query = environ.get("QUERY_STRING", "")
        page = 1
        if query:
            found = _PAGE_QUERY.match(query)
            if found is None:
                return None
            page = int(found.group(1))
        version = story_version(self.context.storage, story_id)
        if version is None or version.merged_into is not None:
            return None  # 404 / 301
        per_page = settings.feed_max_entries
        if page > publish.page_count(version.article_count, per_page):
            return None  # 404
        base = settings.base_url.rstrip("/")
        etag = story_feed_etag(fmt, base, version, page, per_page)
        headers = [("ETag", f'"{etag}"')]
        if not _modified(environ, etag, version.updated_at):
            status, body = "304 NOT MODIFIED", b""
        else:
            cached = self.context.renders.peek(etag)
            if cached is None:
                return None  # Flask renders it (and fills the cache)
            status, body = "200 OK", cached[0]
            headers = [
                ("Content-Type", CONTENT_TYPES[fmt]),
                ("Content-Length", str(len(body))),
                *headers,
                ("Last-Modified", http_date(version.updated_at)),
            ]
        headers.append(("Cache-Control", f"public, max-age={settings.feed_max_age}"))
        if page == 1:
            topic = f"{base}/stories/{story_id}/feed.{fmt}"  # publish.story_feed_url(base, story_id, fmt, 1)
            headers.append(("Link", publish.hub_link_header(base, topic)))
        headers.extend(self.security)
        return status, headers, body


def _modified(environ: dict[str, Any], etag: str, last_modified: datetime | None) -> bool:
    """``werkzeug.http.is_resource_modified`` for a strong ``etag``, with the common
    case (one or a few tags in ``If-None-Match``) parsed without its machinery."""
    given = environ.get("HTTP_IF_NONE_MATCH")
    if given is None or '"' not in given or given.count('"') > 16:
        return is_resource_modified(environ, etag=etag, last_modified=last_modified)
    quoted = f'"{etag}"'
    for tag in given.split(","):
        tag = tag.strip()
        if tag.startswith("W/"):  # If-None-Match compares weakly (RFC 9110 13.1.2)
            tag = tag[2:]
        if tag == quoted:
            return False
    return True


class _Kept:
    """One river answer kept by :class:`RiverCache`: its ``ETag``, when Flask was asked
    for it, and its ``200`` (headers and body) when one was seen, else only its ``304``
    headers."""

    __slots__ = ("asked", "expires", "etag", "ok", "not_modified", "size")

    def __init__(self, asked: float, expires: float, etag: str) -> None:
        self.asked = asked
        self.expires = expires
        self.etag = etag
        self.ok: tuple[list[tuple[str, str]], bytes] | None = None
        self.not_modified: list[tuple[str, str]] | None = None
        self.size = 0

    def answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """The kept answer to this request, or None (Flask answers it)."""
        if _modified(environ, self.etag, None):
            return None if self.ok is None else ("200 OK", self.ok[0], self.ok[1])
        if self.not_modified is not None:
            return "304 NOT MODIFIED", self.not_modified, b""
        if self.ok is not None:  # only a 200 was seen: its headers, as werkzeug trims them for a 304
            headers = list(self.ok[0])
            remove_entity_headers(headers)
            return "304 NOT MODIFIED", headers, b""
        return None


class RiverCache:
    """The river's answers to readers without a session, kept ``seconds`` (per process).

    Keyed by everything Flask builds the answer from (scheme, the Host header as
    sent, server name and port, script root, path, query). Bounded: at most
    ``MAX_ENTRIES`` keys and ``MAX_BYTES`` of bodies (a body over ``MAX_BODY`` is not
    kept); expired entries go first, then the oldest, so odd query strings cannot
    fill memory. An answer replaces a kept one only if Flask was asked for it later
    (a slow render finishing last does not bring an older river back), and it is
    kept ``seconds`` from when Flask was asked.
    """

    MAX_ENTRIES = 256
    MAX_BYTES = 16 * 1024 * 1024
    MAX_BODY = 2 * 1024 * 1024
    MAX_QUERY = 512

    def __init__(self, seconds: float) -> None:
        self.seconds = max(0.0, float(seconds))
        self._items: dict[tuple[Any, ...], _Kept] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    @classmethod
    def key(cls, environ: dict[str, Any]) -> tuple[Any, ...] | None:
        query = environ.get("QUERY_STRING", "")
        if len(query) > cls.MAX_QUERY:
            return None
        return (
            environ.get("wsgi.url_scheme", ""),
            environ.get("HTTP_HOST"),  # None (no header) and "" (empty) are different hosts to Flask
            environ.get("SERVER_NAME", ""),
            environ.get("SERVER_PORT", ""),
            environ.get("SCRIPT_NAME", ""),
            environ.get("PATH_INFO", ""),
            query,
        )

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        """Bytes of the bodies kept."""
        return self._bytes

    def get(self, key: tuple[Any, ...]) -> _Kept | None:
        kept = self._items.get(key)
        if kept is None or kept.expires <= time.monotonic():
            return None
        return kept

    def put(
        self, key: tuple[Any, ...], status: str, headers: list[tuple[str, str]], body: bytes, asked: float
    ) -> None:
        """Keep a ``200`` (with its ``body``) or a ``304`` Flask gave to a request made at
        ``asked`` (``time.monotonic()``)."""
        code = status[:3]
        if code not in ("200", "304") or len(body) > self.MAX_BODY:
            return
        etag = None
        for name, value in headers:
            lower = name.lower()
            if lower == "set-cookie":
                return  # the answer starts a session: it is that reader's
            if lower == "etag" and value.startswith('"') and value.endswith('"') and len(value) > 2:
                etag = value[1:-1]
        if etag is None:
            return
        now = time.monotonic()
        expires = asked + self.seconds
        if expires <= now:
            return  # Flask took longer than the entry would live
        with self._lock:
            kept = self._items.get(key)
            if kept is not None and kept.asked > asked and kept.expires > now:
                return  # a newer river is kept: this answer was asked for before it
            if kept is None or kept.etag != etag or kept.expires <= now:
                self._drop(key)
                kept = self._items[key] = _Kept(asked, expires, etag)
            if code == "304":
                kept.not_modified = list(headers)
            else:
                self._bytes += len(body) - kept.size
                kept.ok, kept.size = (list(headers), body), len(body)
            self._evict(now)

    def _drop(self, key: tuple[Any, ...]) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.size

    def _evict(self, now: float) -> None:
        """Expired entries out, then the oldest while over the bounds."""
        for key in [k for k, v in self._items.items() if v.expires <= now]:
            self._drop(key)
        while len(self._items) > self.MAX_ENTRIES or self._bytes > self.MAX_BYTES:
            self._drop(next(iter(self._items)))
