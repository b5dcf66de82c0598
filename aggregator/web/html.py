"""HTML pages: the river of stories, one page per story, the subscriptions page,
and the operator's corrections (sign in, split an article out, merge stories).

Server-rendered with Jinja (autoescaped everywhere); every page works without
JavaScript (``static/app.js`` only rewrites times to the reader's zone and adds
a copy button). Views read storage and render; the only writes are the
operator's corrections, behind a signed session cookie and a CSRF token.

How a story reads (see README "The web view"):

- headline: the title of the story's earliest article (storage's rule, stable
  as copies arrive); summary: that article's summary, else the earliest
  non-empty one;
- exact copies (``Article.copy_of``) are folded under their original;
- each article says why it joined: the signal and the score stored by the
  clustering, or the operator's correction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from werkzeug.http import is_resource_modified
from werkzeug.wrappers import Response as BaseResponse

from aggregator.models import Article
from aggregator.storage.facade import CorrectionError, StoryFilter, feed_choices_fast, river_versions
from aggregator.web import common
from aggregator.web.atom import rendered, validator

bp = Blueprint("html", __name__)

SUMMARY_CHARS = 240
STORY_RSS_ENDPOINT = "atom.story_feed_rss"  # another blueprint's; linked only when it exists
RSS_TYPE = "application/rss+xml"


@bp.record_once
def _configure_sessions(state: BlueprintSetupState) -> None:
    app = state.app
    settings = app.extensions["aggregator"].settings
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = common.session_secret(settings)
    app.config["SESSION_COOKIE_NAME"] = "aggregator_session"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = bool(settings.base_url and settings.base_url.startswith("https:"))


# --------------------------------------------------------------------------- the river


@bp.get("/")
def river() -> str | BaseResponse:
    """The river. For a reader without a session cookie (no operator, no flashed
    message: the page is then a function of the data and the minute) it is
    validated before it is rendered, like the feeds: a strong ``ETag`` from the
    listed stories' versions (one query, no sources or summaries read), the feed
    choices, the request's path and query, and the current minute (the page's
    relative times and time range are computed from the end of the minute). ``If-None-Match``
    matching: 304; else the body from the render cache, else rendered and kept."""
    page_size = common.settings().page_size
    page = common.int_arg("page", 1)
    min_sources = common.min_sources_arg()
    order = common.order_arg()
    range_key = common.range_arg()
    feed_id = common.optional_int_arg("feed")
    folder = common.text_arg("folder")
    query = common.text_arg("q")
    now = common.utcnow()
    store = common.storage()
    anonymous = current_app.config["SESSION_COOKIE_NAME"] not in request.cookies
    if anonymous:  # to the end of the current minute: nothing listed is in the future
        now = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    flt = StoryFilter(
        min_sources=min_sources,
        since=now - common.RANGES[range_key][1] if range_key else None,
        feed_id=feed_id,
        folder=folder,
        text=query,
    )
    if not anonymous:
        return _river_page(flt, page, page_size, order, now)
    total, listed = river_versions(store, flt, limit=page_size, offset=(page - 1) * page_size, order=order)
    etag = validator(
        "river page",
        request.script_root,
        request.full_path,
        now.isoformat(),
        page_size,
        total,
        [(story.id, story.updated_at.isoformat(), story.article_count) for story in listed],
        feed_choices_fast(store),
    )
    if not is_resource_modified(request.environ, etag=etag):
        response = Response(status=304)
        del response.headers["Content-Type"]
    else:
        body = rendered(etag, lambda: _river_page(flt, page, page_size, order, now).encode("utf-8"))
        response = Response(body, status=200, content_type="text/html; charset=utf-8")
    response.set_etag(etag)
    response.vary.add("Cookie")  # a signed-in operator sees another page
    return response


def _river_page(flt: StoryFilter, page: int, page_size: int, order: str, now: datetime) -> str:
    store = common.storage()
    min_sources, feed_id, folder, query = flt.min_sources, flt.feed_id, flt.folder, flt.text
    range_key = common.range_arg()
    result = store.find_stories(flt, limit=page_size, offset=(page - 1) * page_size, order=order)
    pages = max(1, math.ceil(result.total / page_size))
    filters = {
        "q": query,
        "range": range_key,
        "min_sources": min_sources if min_sources > 1 else None,
        "feed": feed_id,
        "folder": folder,
    }

    def river_url(**changes: object) -> str:
        params: dict[str, object] = {**filters, "order": order if order != "updated" else None}
        params.update(changes)
        return url_for("html.river", **{k: v for k, v in params.items() if v is not None})

    def page_url(number: int) -> str:
        return river_url(page=number if number > 1 else None)

    choices = store.feed_choices()
    feed_names = {feed_id_: name for feed_id_, name, _ in choices}
    summaries = {
        story_id: _one_line(text, SUMMARY_CHARS) for story_id, text in result.summaries.items()
    }
    # The feeds take the same filters, except the time range (relative to "now",
    # it would change the feed's validators on every request).
    feed_params = {k: v for k, v in filters.items() if k != "range" and v is not None}
    feed_url = url_for("atom.river_feed", **feed_params)
    rss_url = url_for("atom.river_feed_rss", **feed_params)
    filtered = any(value is not None for key, value in filters.items() if key != "min_sources")
    return render_template(
        "river.html",
        stories=result.stories,
        summaries=summaries,
        total=result.total,
        page=page,
        pages=pages,
        min_sources=min_sources,
        order=order,
        range_key=range_key,
        ranges=common.RANGES,
        feed_id=feed_id,
        feed_choices=choices,
        feed_name=feed_names.get(feed_id) if feed_id else None,
        folder=folder,
        folders=sorted({f for _, _, f in choices if f}),
        query=query,
        filtered=filtered,
        river_url=river_url,
        prev_url=page_url(page - 1) if page > 1 else None,
        next_url=page_url(page + 1) if page < pages else None,
        feed_url=feed_url,
        now=now,
        feeds=[(feed_url, "Atom feed of these stories"), (rss_url, "RSS feed of these stories", RSS_TYPE)],
    )


def _one_line(text: str, limit: int) -> str:
    line = " ".join(text.split())
    if len(line) <= limit:
        return line
    cut = line[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",.;:") + "…"


# --------------------------------------------------------------------------- one story


@dataclass(frozen=True)
class Coverage:
    """One original article of a story with its exact copies folded under it."""

    article: Article
    copies: tuple[Article, ...]


@dataclass(frozen=True)
class TimelineRow:
    article: Article
    offset: str  # "first report", "+35 min"
    position: int  # 0..100 in steps of 5: where on the story's span it falls
    first_for_outlet: bool


def fold_copies(articles: tuple[Article, ...]) -> list[Coverage]:
    """Originals in order, each with the articles that are exact copies of it
    (following chains of copies); a copy whose original is not in the story
    stands on its own."""
    present = {article.id for article in articles}
    root: dict[int, int] = {}

    def find_root(article: Article) -> int:
        seen = {article.id}
        current = article
        by_id = {a.id: a for a in articles}
        while current.copy_of is not None and current.copy_of in present and current.copy_of not in seen:
            seen.add(current.copy_of)
            current = by_id[current.copy_of]
        return current.id

    for article in articles:
        root[article.id] = find_root(article)
    copies: dict[int, list[Article]] = {}
    for article in articles:
        if root[article.id] != article.id:
            copies.setdefault(root[article.id], []).append(article)
    return [
        Coverage(article, tuple(copies.get(article.id, ())))
        for article in articles
        if root[article.id] == article.id
    ]


def timeline(articles: tuple[Article, ...]) -> list[TimelineRow]:
    """Every report in time order, with its delay after the first one."""
    ordered = sorted(articles, key=lambda a: (a.published, a.id))
    if not ordered:
        return []
    start, end = ordered[0].published, ordered[-1].published
    span = (end - start).total_seconds()
    seen: set[str] = set()
    rows = []
    for index, article in enumerate(ordered):
        delta = (article.published - start).total_seconds()
        position = int(round(delta / span * 20)) * 5 if span > 0 else 0
        outlet = article.source or ""
        rows.append(
            TimelineRow(
                article=article,
                offset="first report" if index == 0 else common.offset_text(delta),
                position=position,
                first_for_outlet=outlet not in seen,
            )
        )
        seen.add(outlet)
    return rows


@bp.get("/stories/<int:story_id>")
def story(story_id: int) -> str | BaseResponse:
    store = common.storage()
    found = store.get_story(story_id)
    if found is None:
        abort(404, description=f"There is no story {story_id}.")
    if found.story.merged_into is not None:
        return redirect(url_for("html.story", story_id=found.story.merged_into), code=301)
    feed_url = url_for("atom.story_feed", story_id=story_id)
    rss_url = None
    if STORY_RSS_ENDPOINT in current_app.view_functions:
        rss_url = url_for(STORY_RSS_ENDPOINT, story_id=story_id)
    alternates: list[tuple[str, ...]] = [(feed_url, "Atom feed of this story")]
    if rss_url:
        alternates.append((rss_url, "RSS feed of this story", RSS_TYPE))
    return render_template(
        "story.html",
        story=found.story,
        articles=found.articles,
        coverage=fold_copies(found.articles),
        timeline=timeline(found.articles),
        corrections=store.corrections_for(story_id),
        who=common.operator(),
        feed_url=feed_url,
        feed_abs_url=common.base_url() + feed_url,
        rss_url=rss_url,
        now=common.utcnow(),
        feeds=[*alternates, (url_for("atom.river_feed"), "Atom feed of all stories")],
    )


# --------------------------------------------------------------------------- feeds


@bp.get("/feeds")
def feeds() -> str:
    store = common.storage()
    subscriptions = store.list_feeds()
    stats = store.feed_stats()
    feed_url = url_for("atom.river_feed")
    return render_template(
        "feeds.html",
        subscriptions=subscriptions,
        stats=stats,
        now=common.utcnow(),
        feed_url=feed_url,
        feeds=[(feed_url, "Atom feed of all stories")],
    )


# --------------------------------------------------------------------------- operators


def _safe_next(value: str | None) -> str:
    """A local path to go back to after signing in (never another site)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return url_for("html.river")


@bp.get("/login")
def login_form() -> str:
    return render_template(
        "login.html",
        enabled=bool(common.settings().api_token),
        next=_safe_next(request.args.get("next")),
        error=None,
    )


@bp.post("/login")
def login() -> str | BaseResponse | tuple[str, int]:
    if not common.settings().api_token:
        abort(403, description="Signing in is off: the operator token (AGGREGATOR_API_TOKEN) is not set.")
    common.check_csrf()
    target = _safe_next(request.form.get("next"))
    name = " ".join(request.form.get("name", "").split())[: common.MAX_OPERATOR_NAME]
    if not common.check_token(request.form.get("token", "")):
        page = render_template("login.html", enabled=True, next=target, error="That token is not right.")
        return page, 401
    session.clear()
    session["operator"] = name if name and name.isprintable() else "operator"
    session["tk"] = common.token_fingerprint()
    common.csrf_token()  # a fresh CSRF token for the new session
    flash(f"Signed in as {session['operator']}.", "ok")
    return redirect(target, code=303)


@bp.post("/logout")
def logout() -> BaseResponse:
    common.check_csrf()
    session.clear()
    return redirect(url_for("html.river"), code=303)


def _require_operator() -> str:
    name = common.operator()
    if name is None:
        abort(403, description="Only a signed-in operator can correct stories.")
    common.check_csrf()
    return name


def _form_int(name: str) -> int:
    raw = request.form.get(name, "").strip().lstrip("#")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        abort(400, description=f"{name.replace('_', ' ')} must be a story or article number")
    return int(raw)


@bp.post("/stories/<int:story_id>/split")
def split(story_id: int) -> BaseResponse:
    name = _require_operator()
    article_id = _form_int("article_id")
    store = common.storage()
    article = store.get_article(article_id)
    if article is None or article.story_id != story_id:
        abort(400, description=f"Article {article_id} is not in story {story_id}.")
    try:
        new_story = store.split_article(article_id, now=common.utcnow(), by=f"web:{name}")
    except CorrectionError as exc:
        flash(str(exc), "error")
        return redirect(url_for("html.story", story_id=story_id), code=303)
    flash(f"Article #{article_id} now has its own story #{new_story}; it will not be merged back.", "ok")
    return redirect(url_for("html.story", story_id=story_id), code=303)


@bp.post("/stories/<int:story_id>/merge")
def merge(story_id: int) -> BaseResponse:
    name = _require_operator()
    other = _form_int("other")
    if other == story_id:
        flash("A story cannot be merged with itself.", "error")
        return redirect(url_for("html.story", story_id=story_id), code=303)
    try:
        common.storage().merge_stories(story_id, [other], now=common.utcnow(), by=f"web:{name}")
    except CorrectionError as exc:
        flash(str(exc), "error")
        return redirect(url_for("html.story", story_id=story_id), code=303)
    flash(f"Story #{other} is merged into this one; its pages and feed now redirect here.", "ok")
    return redirect(url_for("html.story", story_id=story_id), code=303)
