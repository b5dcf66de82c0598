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
rendered, from cheap data: the story's version (id, ``updated_at``, article count:
one primary-key lookup, :func:`aggregator.storage.facade.story_version`) or, for
the river, the listed stories' versions (two indexed statements, no articles
loaded, :func:`~aggregator.storage.facade.river_versions`), plus the canonical query, the page,
the page size, the public base URL and :data:`aggregator.publish.FORMAT_VERSION`.
Their hash is a strong ``ETag`` (renders are byte-identical for identical
inputs); ``Last-Modified`` is the newest ``updated_at`` shown. A request whose
``If-None-Match`` (or, without one, ``If-Modified-Since``) matches gets a
``304 Not Modified`` with no body: no articles are read and nothing is
rendered. ``Cache-Control: public, max-age=<feed_max_age>`` goes on both.

Rendered bodies are kept by that ``ETag`` in the render cache
(:mod:`aggregator.web.cache`, ``render_cache_mb``), and each river entry's content by
its story's version, so a full 200 for an unchanged feed reads no article either; a
story feed's 304s and cached 200s are answered before Flask
(:mod:`aggregator.web.fastpath`) with the same validators and headers.

Rendering is :mod:`aggregator.publish`'s job; this module reads storage,
chooses the canonical URLs and answers conditional requests. Its functions are
called through the module (``publish.story_feed(...)``) on purpose, so a test
can count renders (the render cache's hits are not renders).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import cast
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, redirect, request, url_for
from werkzeug.http import is_resource_modified
from werkzeug.wrappers import Response as BaseResponse

from aggregator import __version__, publish
from aggregator.models import Story, StoryWithArticles
from aggregator.storage.facade import StoryFilter, StoryVersion, river_versions, story_version
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


def story_feed_etag(fmt: publish.Format, base: str, version: StoryVersion, page: int, per_page: int) -> str:
    """The validator of one page of a story feed (also :mod:`aggregator.web.fastpath`'s)."""
    return validator(
        "story", fmt, base, version.id, version.updated_at.isoformat(), version.article_count, page, per_page
    )


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
            Response(rendered(etag, render), status=200, content_type=CONTENT_TYPES[fmt]), etag, last_modified
        )
    if topic is not None:
        response.headers["Link"] = publish.hub_link_header(common.base_url(), topic)
    return response


def rendered(etag: str, render: Callable[[], bytes]) -> bytes:
    """The body whose strong validator is ``etag``: from the render cache, else
    rendered now (and kept). See :mod:`aggregator.web.cache`."""
    return common.render_cache().get_or_render(etag, render)


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
    record = story_version(store, story_id)  # one primary-key lookup: enough to validate
    if record is None:
        abort(404, description=f"There is no story {story_id}.")
    if record.merged_into is not None:
        return _to_survivor(record.merged_into, fmt)
    pages = publish.page_count(record.article_count, per_page)
    if page > pages:
        _no_such_page(page, pages)
    base = common.base_url()
    etag = story_feed_etag(fmt, base, record, page, per_page)

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
    # The listed stories' versions only: each entry's content is made (or found in the
    # render cache) from the story read whole.
    total, listed = river_versions(store, flt, limit=per_page, offset=(page - 1) * per_page)
    pages = publish.page_count(total, per_page)
    if page > pages:
        _no_such_page(page, pages)
    base = common.base_url()
    query = f"?{urlencode(canonical)}" if canonical else ""
    feed_url = f"{base}/feed.{fmt}{query}"
    title = river_title(flt, feed_name)
    updated = max((story.updated_at for story in listed), default=None)
    etag = validator(
        "river",
        fmt,
        base,
        query,
        title,
        page,
        per_page,
        total,
        [(story.id, story.updated_at.isoformat(), story.article_count) for story in listed],
    )

    def render() -> bytes:
        stories, contents = _river_entries(listed, base)
        renderer = publish.stories_feed if fmt == "atom" else publish.stories_feed_rss
        return renderer(
            stories,
            base_url=base,
            title=title,
            self_url=publish.with_page(feed_url, page),
            alternate_url=f"{base}/{query}",
            updated=updated or publish.EPOCH,
            paging=publish.Paging.of(page, pages, lambda number: publish.with_page(feed_url, number)),
            contents=contents,
        )

    return _conditional(fmt, etag, updated, render, publish.with_page(feed_url, 1) if page == 1 else None)


def _river_entries(listed: list[StoryVersion], base: str) -> tuple[list[StoryWithArticles], dict[int, str]]:
    """The listed stories, each with its entry's content, for rendering a river feed.

    An entry's content lists every article of its story, so making it means reading
    them all (a big story has hundreds). It is kept in the render cache under the
    story's version (id, ``updated_at``, article count): when ingest changes the
    river, only the stories that changed are read again."""
    store = common.storage()
    cache = common.render_cache()
    stories: list[StoryWithArticles] = []
    contents: dict[int, str] = {}
    for story in listed:
        key = validator("river entry", base, story.id, story.updated_at.isoformat(), story.article_count)
        found = cache.get(key)
        if found is not None:
            record, content = cast(Story, found[1]), found[0].decode("utf-8")
        else:
            full = store.get_story(story.id)
            # A story merged between the two reads is skipped; its survivor is listed next time.
            if full is None or full.story.merged_into is not None:
                continue
            record, content = full.story, publish.story_entry_content(full, base)
            cache.put(key, content.encode("utf-8"), record)
        stories.append(StoryWithArticles(story=record, articles=()))
        contents[record.id] = content
    return stories, contents
