"""The JSON API: stories, feeds' status, subscribing and unsubscribing, health.

Reads are public. Writes (``POST /api/feeds``, ``DELETE /api/feeds/<id>``)
need ``Authorization: Bearer <api_token>``; with no token configured they are
switched off (403). Tokens are compared in constant time. Errors are
``{"error": "..."}``.

Must not: fetch a feed (subscribing only stores it; the scheduler polls it when
due), or accept anything but http(s) URLs (local files are for the CLI).
"""

from __future__ import annotations

import hmac
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, jsonify, redirect, request, url_for
from werkzeug.exceptions import Unauthorized
from werkzeug.wrappers import Response as BaseResponse

from aggregator.models import Article, Feed, Story
from aggregator.storage import FeedExistsError
from aggregator.web import common

bp = Blueprint("api", __name__)

MAX_URL_LENGTH = 2048
MAX_FOLDER_LENGTH = 200
TOKEN_DISABLED = "write endpoints are disabled: set AGGREGATOR_API_TOKEN"


# --------------------------------------------------------------------------- records to JSON


def story_json(story: Story, base: str) -> dict[str, Any]:
    return {
        "id": story.id,
        "headline": story.headline,
        "article_count": story.article_count,
        "source_count": story.source_count,
        "sources": list(story.sources),
        "created_at": common.iso(story.created_at),
        "updated_at": common.iso(story.updated_at),
        "first_published": common.iso(story.first_published),
        "last_published": common.iso(story.last_published),
        "links": {
            "html": f"{base}/stories/{story.id}",
            "atom": f"{base}/stories/{story.id}/feed.atom",
            "rss": f"{base}/stories/{story.id}/feed.rss",
            "api": f"{base}/api/stories/{story.id}",
        },
    }


def article_json(article: Article) -> dict[str, Any]:
    return {
        "id": article.id,
        "feed_id": article.feed_id,
        "url": article.url,
        "title": article.title,
        "source": article.source,
        "author": article.author,
        "published": common.iso(article.published),
        "updated": common.iso(article.updated),
        "summary": article.summary,
        "score": article.score,
        "signal": article.signal,
        "copy_of": article.copy_of,
    }


def feed_json(feed: Feed) -> dict[str, Any]:
    return {
        "id": feed.id,
        "url": feed.url,
        "title": feed.title,
        "site_url": feed.site_url,
        "folder": feed.folder,
        "added_at": common.iso(feed.added_at),
        "last_fetched_at": common.iso(feed.last_fetched_at),
        "last_success_at": common.iso(feed.last_success_at),
        "next_check_at": common.iso(feed.next_check_at),
        "error_count": feed.error_count,
        "last_error": feed.last_error,
        "article_count": feed.article_count,
        "min_interval": feed.min_interval,
        "max_interval": feed.max_interval,
        "stopped": feed.stopped,
    }


def _error(status: int, message: str) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    return response


# --------------------------------------------------------------------------- reads


@bp.get("/api/stories")
def stories() -> Response:
    settings = common.settings()
    page = common.int_arg("page", 1)
    page_size = common.int_arg("page_size", settings.page_size, maximum=common.MAX_API_PAGE_SIZE)
    min_sources = common.min_sources_arg()
    order = common.order_arg()
    store = common.storage()
    total = store.count_stories(min_sources=min_sources)
    listed = store.list_stories(
        limit=page_size, offset=(page - 1) * page_size, min_sources=min_sources, order=order
    )
    base = common.base_url()
    return jsonify(
        {
            "items": [story_json(story, base) for story in listed],
            "page": page,
            "page_size": page_size,
            "pages": max(1, math.ceil(total / page_size)),
            "total": total,
            "min_sources": min_sources,
            "order": order,
        }
    )


@bp.get("/api/stories/<int:story_id>")
def story(story_id: int) -> BaseResponse:
    found = common.storage().get_story(story_id)
    if found is None:
        return _error(404, f"no story {story_id}")
    if found.story.merged_into is not None:
        return redirect(url_for("api.story", story_id=found.story.merged_into), code=301)
    result = story_json(found.story, common.base_url())
    result["articles"] = [article_json(article) for article in found.articles]
    return jsonify(result)


@bp.get("/api/feeds")
def feeds() -> Response:
    listed = common.storage().list_feeds()
    return jsonify({"items": [feed_json(feed) for feed in listed], "total": len(listed)})


@bp.get("/api/feeds/<int:feed_id>")
def feed(feed_id: int) -> Response:
    found = common.storage().get_feed(feed_id)
    if found is None:
        return _error(404, f"no feed {feed_id}")
    return jsonify(feed_json(found))


# --------------------------------------------------------------------------- writes


def _require_token() -> None:
    """403 when writes are off, 401 unless the bearer token matches (constant time)."""
    token = common.settings().api_token
    if not token:
        abort(_error(403, TOKEN_DISABLED))
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode("utf-8"), token.encode("utf-8")
    ):
        response = _error(401, "missing or wrong token: send Authorization: Bearer <token>")
        response.headers["WWW-Authenticate"] = 'Bearer realm="aggregator"'
        raise Unauthorized(response=response)


def validate_feed_url(value: Any) -> str:
    """The URL to subscribe, or a 400 saying what is wrong with it."""
    if not isinstance(value, str) or not value.strip():
        abort(_error(400, 'send a JSON object with the feed\'s address: {"url": "https://..."}'))
    url = value.strip()
    if len(url) > MAX_URL_LENGTH:
        abort(_error(400, f"url is too long (at most {MAX_URL_LENGTH} characters)"))
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        abort(_error(400, "url must not contain spaces or control characters"))
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a malformed port
    except ValueError as exc:
        abort(_error(400, f"url is malformed: {exc}"))
    if parts.scheme.lower() not in ("http", "https"):
        abort(
            _error(
                400,
                "url must start with http:// or https:// (local files can only be added "
                "with the command line)",
            )
        )
    if not parts.hostname:
        abort(_error(400, "url has no host name"))
    if parts.username is not None or parts.password is not None:
        abort(_error(400, "url must not contain a user name or password (the feed list is public)"))
    return url


def _folder(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        abort(_error(400, "folder must be a string"))
    folder = " ".join(value.split())
    if len(folder) > MAX_FOLDER_LENGTH:
        abort(_error(400, f"folder is too long (at most {MAX_FOLDER_LENGTH} characters)"))
    if not folder.isprintable():
        abort(_error(400, "folder must not contain control characters"))
    return folder or None


@bp.post("/api/feeds")
def add_feed() -> Response:
    _require_token()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'send a JSON object (Content-Type: application/json): {"url": "https://..."}')
    url = validate_feed_url(body.get("url"))
    folder = _folder(body.get("folder"))
    try:
        created = common.storage().add_feed(url, now=datetime.now(UTC), folder=folder)
    except FeedExistsError as exc:
        response = _error(409, f"already subscribed: {exc.feed.url} (feed {exc.feed.id})")
        response.headers["Location"] = url_for("api.feed", feed_id=exc.feed.id)
        return response
    response = jsonify(feed_json(created))
    response.status_code = 201
    response.headers["Location"] = url_for("api.feed", feed_id=created.id)
    return response


@bp.delete("/api/feeds/<int:feed_id>")
def remove_feed(feed_id: int) -> Response:
    _require_token()
    if not common.storage().remove_feed(feed_id):
        return _error(404, f"no feed {feed_id}")
    return Response(status=204)


# --------------------------------------------------------------------------- corrections


def _story_id_field(body: dict[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        abort(_error(400, f'send a JSON object with a positive whole number: {{"{name}": 12}}'))
    return value


@bp.post("/api/stories/<int:story_id>/split")
def split_story(story_id: int) -> Response:
    """Move one article (with its exact copies) out of the story into a new one."""
    from aggregator.storage.facade import CorrectionError

    _require_token()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'send a JSON object (Content-Type: application/json): {"article_id": 12}')
    article_id = _story_id_field(body, "article_id")
    store = common.storage()
    article = store.get_article(article_id)
    if article is None or article.story_id != story_id:
        return _error(404, f"article {article_id} is not in story {story_id}")
    try:
        new_story = store.split_article(article_id, now=datetime.now(UTC), by="api")
    except CorrectionError as exc:
        return _error(409, str(exc))
    found = store.get_story(new_story)
    assert found is not None
    response = jsonify({"from": story_id, "story": story_json(found.story, common.base_url())})
    response.status_code = 201
    response.headers["Location"] = url_for("api.story", story_id=new_story)
    return response


@bp.post("/api/stories/<int:story_id>/merge")
def merge_story(story_id: int) -> Response:
    """Merge the story ``other`` into this one; the other's URLs redirect here."""
    from aggregator.storage.facade import CorrectionError

    _require_token()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, 'send a JSON object (Content-Type: application/json): {"other": 12}')
    other = _story_id_field(body, "other")
    if other == story_id:
        return _error(400, "a story cannot be merged with itself")
    store = common.storage()
    for wanted in (story_id, other):
        if store.get_story(wanted) is None:
            return _error(404, f"no story {wanted}")
    try:
        store.merge_stories(story_id, [other], now=datetime.now(UTC), by="api")
    except CorrectionError as exc:
        return _error(409, str(exc))
    found = store.get_story(story_id)
    assert found is not None
    return jsonify({"merged": other, "story": story_json(found.story, common.base_url())})
