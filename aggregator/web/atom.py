"""Feed endpoints, Atom and RSS 2.0:

* ``/feed.atom``, ``/feed.rss`` -- the river, one entry per story; filters
  ``min_sources``, ``q`` (search words), ``feed`` (a feed id) and ``folder``,
  the same parameters as the HTML river (``/``);
* ``/stories/<id>/feed.atom``, ``/stories/<id>/feed.rss`` -- one entry per
  article of a story.

Every feed is paged (``?page=N``, ``feed_max_entries`` entries a page, RFC 5005
paged feeds: see :mod:`aggregator.publish` for why not archived feeds); a page
past the last is a 404. A merged story's feeds answer 301 to the surviving
story's feed of the same format.

Conditional GET, cheaply. Polling readers are most of the traffic and most
polls find nothing new, so the validators are computed *before* anything is
rendered, from cheap data: the story record (id, ``updated_at``, article count)
or, for the river, the listed stories' ids, ``updated_at`` and article counts
(one indexed query, no articles loaded), plus the canonical query, the page,
the page size, the public base URL and :data:`aggregator.publish.FORMAT_VERSION`.
Their hash is a strong ``ETag`` (renders are byte-identical for identical
inputs); ``Last-Modified`` is the newest ``updated_at`` shown. A request whose
``If-None-Match`` (or, without one, ``If-Modified-Since``) matches gets a
``304 Not Modified`` with no body: no articles are read and nothing is
rendered. ``Cache-Control: public, max-age=<feed_max_age>`` goes on both.

Rendering is :mod:`aggregator.publish`'s job; this module reads storage,
chooses the canonical URLs and answers conditional requests. Its functions are
called through the module (``publish.story_feed(...)``) on purpose, so a test
can count renders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, redirect, request, url_for
from werkzeug.http import is_resource_modified
from werkzeug.wrappers import Response as BaseResponse

from aggregator import __version__, publish
from aggregator.models import Story, StoryWithArticles
from aggregator.storage.facade import StoryFilter
from aggregator.web import common

bp = Blueprint("atom", __name__)

ATOM_MIMETYPE = "application/atom+xml; charset=utf-8"
RSS_MIMETYPE = "application/rss+xml; charset=utf-8"
CONTENT_TYPES: dict[publish.Format, str] = {"atom": ATOM_MIMETYPE, "rss": RSS_MIMETYPE}
STORY_ENDPOINTS: dict[publish.Format, str] = {"atom": "atom.story_feed", "rss": "atom.story_feed_rss"}


# --------------------------------------------------------------------------- conditional GET


def validator(*parts: object) -> str:
    """A strong entity tag for a rendering whose inputs are ``parts``."""
    key = repr((publish.FORMAT_VERSION, __version__, *parts)).encode("utf-8")
    return hashlib.sha256(key).hexdigest()[:32]


def _caching(response: BaseResponse, etag: str, last_modified: datetime | None) -> BaseResponse:
    response.set_etag(etag)  # strong
    if last_modified is not None:
        response.last_modified = last_modified
    response.cache_control.public = True
    response.cache_control.max_age = common.settings().feed_max_age
    return response


def _conditional(
    fmt: publish.Format,
    etag: str,
    last_modified: datetime | None,
    render: Callable[[], bytes],
    topic: str | None = None,
) -> BaseResponse:
    """304 without calling ``render`` when the client's copy is current, else the
    document. ``topic``: the WebSub topic URL when this is a feed's first page
    (answered with a ``Link`` header naming the hub)."""
    if request.method in ("GET", "HEAD") and not is_resource_modified(
        request.environ, etag=etag, last_modified=last_modified
    ):
        not_modified = Response(status=304)
        del not_modified.headers["Content-Type"]
        response = _caching(not_modified, etag, last_modified)
    else:
        response = _caching(
            Response(render(), status=200, content_type=CONTENT_TYPES[fmt]), etag, last_modified
        )
    if topic is not None:
        response.headers["Link"] = publish.hub_link_header(common.base_url(), topic)
    return response


def _no_such_page(page: int, pages: int) -> None:
    abort(404, description=f"There is no page {page} of this feed; it has {common.plural(pages, 'page')}.")


# --------------------------------------------------------------------------- one story


@bp.get("/stories/<int:story_id>/feed.atom")
def story_feed(story_id: int) -> BaseResponse:
    return _story_feed(story_id, "atom")


@bp.get("/stories/<int:story_id>/feed.rss")
def story_feed_rss(story_id: int) -> BaseResponse:
    return _story_feed(story_id, "rss")


def _story_feed(story_id: int, fmt: publish.Format) -> BaseResponse:
    page = common.int_arg("page", 1)
    per_page = common.settings().feed_max_entries
    store = common.storage()
    record = store.story_record(story_id, sources=False)  # no articles: enough to validate
    if record is None:
        abort(404, description=f"There is no story {story_id}.")
    if record.merged_into is not None:
        return _to_survivor(record.merged_into, fmt)
    pages = publish.page_count(record.article_count, per_page)
    if page > pages:
        _no_such_page(page, pages)
    base = common.base_url()
    etag = validator(
        "story", fmt, base, record.id, record.updated_at.isoformat(), record.article_count, page, per_page
    )

    def render() -> bytes:
        found = store.get_story(story_id)
        if found is None:  # removed between the two reads
            abort(404, description=f"There is no story {story_id}.")
        if found.story.merged_into is not None:  # merged between the two reads
            abort(_to_survivor(found.story.merged_into, fmt))
        renderer = publish.story_feed if fmt == "atom" else publish.story_feed_rss
        return renderer(found, base_url=base, max_entries=per_page, page=page)

    topic = publish.story_feed_url(base, record.id, fmt, 1) if page == 1 else None
    return _conditional(fmt, etag, record.updated_at, render, topic)


def _to_survivor(survivor: int, fmt: publish.Format) -> BaseResponse:
    """301 to the surviving story's feed (its first page: page numbers do not carry over)."""
    return redirect(url_for(STORY_ENDPOINTS[fmt], story_id=survivor), code=301)


# --------------------------------------------------------------------------- the river


@bp.get("/feed.atom")
def river_feed() -> BaseResponse:
    return _river_feed("atom")


@bp.get("/feed.rss")
def river_feed_rss() -> BaseResponse:
    return _river_feed("rss")


def river_filter() -> tuple[StoryFilter, list[tuple[str, str]]]:
    """The river's filters from the query string, and their canonical query
    (fixed order, defaults left out): it makes the self URL and the feed id."""
    min_sources = common.min_sources_arg()
    query = common.text_arg("q")
    feed_id = common.optional_int_arg("feed")
    folder = common.text_arg("folder")
    canonical = [
        (name, str(value))
        for name, value in (
            ("min_sources", min_sources if min_sources > 1 else None),
            ("q", query),
            ("feed", feed_id),
            ("folder", folder),
        )
        if value is not None
    ]
    flt = StoryFilter(min_sources=min_sources, feed_id=feed_id, folder=folder, text=query)
    return flt, canonical


def river_title(flt: StoryFilter, feed_name: str | None) -> str:
    return publish.river_title(min_sources=flt.min_sources, feed_name=feed_name, folder=flt.folder, text=flt.text)


def _river_feed(fmt: publish.Format) -> BaseResponse:
    flt, canonical = river_filter()
    page = common.int_arg("page", 1)
    per_page = common.settings().feed_max_entries
    store = common.storage()
    feed_name = None
    if flt.feed_id is not None:
        feed = store.get_feed(flt.feed_id)
        if feed is None:
            abort(404, description=f"There is no feed {flt.feed_id}.")
        feed_name = common.feed_name(feed)
    # Sources and summaries are not used here: the rendering reads each story whole.
    listed = store.find_stories(flt, limit=per_page, offset=(page - 1) * per_page, details=False)
    pages = publish.page_count(listed.total, per_page)
    if page > pages:
        _no_such_page(page, pages)
    base = common.base_url()
    query = f"?{urlencode(canonical)}" if canonical else ""
    feed_url = f"{base}/feed.{fmt}{query}"
    title = river_title(flt, feed_name)
    updated = max((story.updated_at for story in listed.stories), default=None)
    etag = validator(
        "river",
        fmt,
        base,
        query,
        title,
        page,
        per_page,
        listed.total,
        [(story.id, story.updated_at.isoformat(), story.article_count) for story in listed.stories],
    )

    def render() -> bytes:
        stories = _with_articles(listed.stories)
        renderer = publish.stories_feed if fmt == "atom" else publish.stories_feed_rss
        return renderer(
            stories,
            base_url=base,
            title=title,
            self_url=publish.with_page(feed_url, page),
            alternate_url=f"{base}/{query}",
            updated=updated or publish.EPOCH,
            paging=publish.Paging.of(page, pages, lambda number: publish.with_page(feed_url, number)),
        )

    return _conditional(fmt, etag, updated, render, publish.with_page(feed_url, 1) if page == 1 else None)


def _with_articles(listed: list[Story]) -> list[StoryWithArticles]:
    store = common.storage()
    stories: list[StoryWithArticles] = []
    for story in listed:
        found = store.get_story(story.id)
        # A story merged between the two reads is skipped; its survivor is listed next time.
        if found is not None and found.story.merged_into is None:
            stories.append(found)
    return stories
