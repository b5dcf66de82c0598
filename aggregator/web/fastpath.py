"""The hot path of the web service, answered before Flask: story feeds.

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
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from werkzeug.http import http_date, is_resource_modified

from aggregator import metrics, publish
from aggregator.storage import StorageError
from aggregator.storage.facade import story_version

_STORY_FEED = re.compile(r"/stories/([1-9][0-9]{0,8})/feed\.(atom|rss)\Z")
_PAGE_QUERY = re.compile(r"page=([1-9][0-9]{0,5})\Z")
_ROUTES = {"atom": "/stories/<int:story_id>/feed.atom", "rss": "/stories/<int:story_id>/feed.rss"}

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

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "GET" or method == "HEAD":
            match = _STORY_FEED.match(environ.get("PATH_INFO", ""))
            if match is not None:
                started = time.perf_counter()
                try:
                    answer = self._answer(environ, int(match.group(1)), match.group(2))  # type: ignore[arg-type]
                except StorageError:
                    answer = None  # Flask answers (503 when the database is down)
                if answer is not None:
                    status, headers, body = answer
                    start_response(status, headers)
                    self._count(match.group(2), method, status[:3], time.perf_counter() - started)
                    return [body] if method == "GET" else []
        return self.wsgi_app(environ, start_response)

    def _count(self, fmt: str, method: str, status: str, seconds: float) -> None:
        """The metrics ``ops`` keeps for every request, with their labelled children kept."""
        key = (fmt, method, status)
        children = self._metrics.get(key)
        if children is None:
            route = _ROUTES[fmt]
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


def _modified(environ: dict[str, Any], etag: str, last_modified: datetime) -> bool:
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
