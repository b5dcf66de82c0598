"""HTML pages: the river of stories, one page per story, the subscriptions page.

Server-rendered with Jinja (autoescaped everywhere), no JavaScript. Views read
storage and render; they never fetch feeds, cluster, or write anything.
"""

from __future__ import annotations

import math

from flask import Blueprint, abort, redirect, render_template, url_for
from werkzeug.wrappers import Response as BaseResponse

from aggregator.web import common

bp = Blueprint("html", __name__)


@bp.get("/")
def river() -> str:
    page_size = common.settings().page_size
    page = common.int_arg("page", 1)
    min_sources = common.min_sources_arg()
    order = common.order_arg()
    store = common.storage()
    total = store.count_stories(min_sources=min_sources)
    stories = store.list_stories(
        limit=page_size, offset=(page - 1) * page_size, min_sources=min_sources, order=order
    )
    pages = max(1, math.ceil(total / page_size))

    def page_url(number: int) -> str:
        return url_for(
            "html.river",
            page=number if number > 1 else None,
            min_sources=min_sources if min_sources > 1 else None,
            order=order if order != "updated" else None,
        )

    feed_url = url_for("atom.river_feed", min_sources=min_sources if min_sources > 1 else None)
    return render_template(
        "river.html",
        stories=stories,
        total=total,
        page=page,
        pages=pages,
        min_sources=min_sources,
        order=order,
        prev_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if page < pages else None,
        feed_url=feed_url,
        feeds=[(feed_url, "Atom feed of these stories")],
    )


@bp.get("/stories/<int:story_id>")
def story(story_id: int) -> str | BaseResponse:
    found = common.storage().get_story(story_id)
    if found is None:
        abort(404, description=f"There is no story {story_id}.")
    if found.story.merged_into is not None:
        return redirect(url_for("html.story", story_id=found.story.merged_into), code=301)
    feed_url = url_for("atom.story_feed", story_id=story_id)
    return render_template(
        "story.html",
        story=found.story,
        articles=found.articles,
        feed_url=feed_url,
        feeds=[
            (feed_url, "Atom feed of this story"),
            (url_for("atom.river_feed"), "Atom feed of all stories"),
        ],
    )


@bp.get("/feeds")
def feeds() -> str:
    subscriptions = common.storage().list_feeds()
    feed_url = url_for("atom.river_feed")
    return render_template(
        "feeds.html",
        subscriptions=subscriptions,
        feed_url=feed_url,
        feeds=[(feed_url, "Atom feed of all stories")],
    )
