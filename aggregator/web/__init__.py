"""The web service: an HTML river of stories, Atom feeds and a small JSON API.

``create_app(settings, storage)`` builds a Flask application; nothing is built
at import time. The three blueprints are thin views over the storage facade:
``web.html`` (pages), ``web.atom`` (feeds, rendered by :mod:`aggregator.publish`)
and ``web.api`` (JSON). Shared helpers live in ``web.common``.

What the web layer must not do: fetch feeds or cluster articles (the daemon
and the CLI do that; adding a feed here only subscribes it, and the scheduler
picks it up), trust stored HTML (article HTML is shown only through
``aggregator.text.sanitize_html``), or render any page with inline script or
style (the Content-Security-Policy forbids both).

Errors: :class:`StorageUnavailableError` anywhere becomes a 503 with
``Retry-After``; every error answers in the route's own format (JSON under
``/api/`` and ``/healthz``, plain text for ``.atom`` feeds, HTML elsewhere).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import cast

from flask import Flask, Response, jsonify, render_template, request, url_for
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from aggregator.config import Settings
from aggregator.storage import Storage, StorageUnavailableError
from aggregator.web.cache import RenderCache

log = logging.getLogger(__name__)

MAX_CONTENT_LENGTH = 64 * 1024
RETRY_AFTER_SECONDS = 30

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class WebContext:
    """What the views need; lives at ``app.extensions["aggregator"]``."""

    settings: Settings
    storage: Storage
    # Rendered feeds and river pages by ETag (aggregator.web.cache); per process.
    renders: RenderCache = field(default_factory=lambda: RenderCache(0))


def create_app(settings: Settings | None = None, storage: Storage | None = None) -> Flask:
    """Build the application.

    ``settings`` default to :func:`aggregator.config.load` (file and environment);
    ``storage`` defaults to a :class:`Storage` on ``settings.database_url``. The
    caller (the CLI's ``serve``) is expected to have checked the schema.
    """
    if settings is None:
        from aggregator import config

        settings = config.load()
    if storage is None:
        storage = Storage(settings.database_url)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_CONTENT_LENGTH
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.jinja_env.autoescape = True  # every template, whatever its name
    app.extensions["aggregator"] = WebContext(
        settings=settings, storage=storage, renders=RenderCache(settings.render_cache_mb * 1024 * 1024)
    )

    from aggregator.web import api, atom, common, html, ops, websub

    common.register_template_helpers(app)
    app.register_blueprint(html.bp)
    app.register_blueprint(atom.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(websub.bp)
    ops.install(app)

    from aggregator.web.fastpath import FeedFastPath

    app.wsgi_app = FeedFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
    app.after_request(_security_headers)
    app.register_error_handler(StorageUnavailableError, _storage_unavailable)
    app.register_error_handler(HTTPException, _http_error)
    return app


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    return response


def _wants_json() -> bool:
    path = request.path
    return path.startswith("/api/") or path in {"/api", "/healthz", "/readyz"}


def _wants_text() -> bool:
    return request.path.endswith((".atom", ".rss")) or request.path == "/metrics"


def _error_response(status: int, message: str, title: str) -> Response:
    if _wants_json():
        response = jsonify({"error": message})
        response.status_code = status
        return response
    if _wants_text():
        return Response(f"{message}\n", status=status, mimetype="text/plain")
    feeds = [(url_for("atom.river_feed"), "Atom feed of all stories")]
    body = render_template("error.html", status=status, title=title, message=message, feeds=feeds)
    return Response(body, status=status, mimetype="text/html")


def _storage_unavailable(exc: StorageUnavailableError) -> Response:
    log.warning("storage unavailable on %s %s: %s", request.method, request.path, exc)
    response = _error_response(
        503,
        "The database is unavailable right now. Please try again in a moment.",
        "Temporarily unavailable",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _http_error(exc: HTTPException) -> BaseResponse:
    if exc.response is not None:  # a view built the response itself (e.g. JSON 401)
        return cast(BaseResponse, exc.response)
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 500:
        message = "Something went wrong on our side."
    response = _error_response(status, message, exc.name)
    for name, value in exc.get_headers():  # Allow (405), WWW-Authenticate (401) ...
        if name.lower() != "content-type":
            response.headers[name] = value
    return response
