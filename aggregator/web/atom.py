"""Atom endpoints: ``/feed.atom`` (one entry per story) and
``/stories/<id>/feed.atom`` (one entry per article of a story).

Rendering is :mod:`aggregator.publish`'s job; this module only reads storage,
chooses the canonical URLs, and answers conditional requests (ETag and
Last-Modified) so that polling readers cost little.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from flask import Blueprint, Response, abort, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from aggregator import publish
from aggregator.models import StoryWithArticles
from aggregator.web import common

bp = Blueprint("atom", __name__)

ATOM_MIMETYPE = "application/atom+xml; charset=utf-8"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _atom_response(body: bytes, updated: datetime) -> BaseResponse:
    response = Response(body, status=200, content_type=ATOM_MIMETYPE)
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    response.last_modified = updated
    response.cache_control.public = True
    response.cache_control.max_age = 60
    return response.make_conditional(request)


@bp.get("/stories/<int:story_id>/feed.atom")
def story_feed(story_id: int) -> BaseResponse:
    found = common.storage().get_story(story_id)
    if found is None:
        abort(404, description=f"There is no story {story_id}.")
    if found.story.merged_into is not None:
        return redirect(url_for("atom.story_feed", story_id=found.story.merged_into), code=301)
    body = publish.story_feed(
        found, base_url=common.base_url(), max_entries=common.settings().feed_max_entries
    )
    return _atom_response(body, found.story.updated_at)


@bp.get("/feed.atom")
def river_feed() -> BaseResponse:
    min_sources = common.min_sources_arg()
    store = common.storage()
    listed = store.list_stories(limit=common.settings().feed_max_entries, min_sources=min_sources)
    stories: list[StoryWithArticles] = []
    for story in listed:
        found = store.get_story(story.id)
        # A story merged between the two reads is skipped; its survivor is listed.
        if found is not None and found.story.merged_into is None:
            stories.append(found)
    base = common.base_url()
    query = f"?min_sources={min_sources}" if min_sources > 1 else ""
    title = "aggregator: all stories"
    if min_sources > 1:
        title = f"aggregator: stories reported by {min_sources}+ sources"
    updated = max((item.story.updated_at for item in stories), default=EPOCH)
    body = publish.stories_feed(
        stories,
        base_url=base,
        title=title,
        self_url=f"{base}/feed.atom{query}",
        alternate_url=f"{base}/{query}",
        updated=updated,
    )
    return _atom_response(body, updated)
