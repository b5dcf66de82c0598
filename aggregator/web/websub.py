"""The WebSub hub endpoint: ``POST /websub`` (W3C WebSub, section 5.1).

A form-encoded ``hub.mode`` (subscribe or unsubscribe), ``hub.topic`` (one of
our feeds), ``hub.callback`` and, to subscribe, optional ``hub.lease_seconds``
and ``hub.secret``. A valid request is stored for the worker to verify
(:class:`aggregator.websub.Hub`) and answered ``202 Accepted``; a bad one gets
a 4xx whose plain-text body says why. Nothing here touches the network: the
verification of intent happens off the request thread, in the worker.

If the application has a running hub (``app.extensions["websub"]``, set by the
daemon), it is woken so that the verification starts at once; otherwise the
worker finds the request within ``websub_poll_seconds``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request

from aggregator import websub
from aggregator.logs import event
from aggregator.storage.websub import WebSubBusyError
from aggregator.web import common

bp = Blueprint("websub", __name__)
log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 60


def _text(status: int, message: str) -> Response:
    response = Response(f"{message}\n", status=status, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post(websub.HUB_PATH)
def hub() -> Response:
    settings = common.settings()
    store = common.storage()
    base = common.base_url()
    try:
        wanted = websub.parse_request(request.form, base_url=base, settings=settings)
        topic = wanted.parsed
        if wanted.mode == "subscribe":  # unsubscribing from a feed that went away must still work
            _check_exists(topic, base)
        store.websub_add_request(
            mode=wanted.mode,
            topic=wanted.topic,
            callback=wanted.callback,
            secret=wanted.secret,
            lease_seconds=wanted.lease_seconds,
            story_id=topic.story_id,
            now=datetime.now(UTC),
            max_pending=websub.MAX_PENDING_REQUESTS,
        )
    except websub.RequestError as exc:
        event(log, "websub_request", outcome="refused", status=exc.status, error=exc.reason)
        return _text(exc.status, exc.reason)
    except WebSubBusyError:
        response = _text(503, "Too many requests are waiting for verification; try again later.")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    running = current_app.extensions.get("websub")
    if running is not None:
        running.wake()
    event(
        log,
        "websub_request",
        outcome="accepted",
        mode=wanted.mode,
        topic=wanted.topic,
        callback=wanted.callback,
    )
    return _text(202, f"Accepted: the hub will verify this {wanted.mode} request with a GET to the callback.")


def _check_exists(topic: websub.Topic, base: str) -> None:
    store = common.storage()
    if topic.story_id is not None:
        record = store.story_record(topic.story_id)
        if record is None:
            raise websub.RequestError(f"hub.topic: there is no story {topic.story_id}", 404)
        if record.merged_into is not None:
            survivor = websub.Topic(kind="story", fmt=topic.fmt, base_url=base, story_id=record.merged_into)
            raise websub.RequestError(
                f"hub.topic: story {topic.story_id} was merged into story {record.merged_into}; "
                f"subscribe to {survivor.url()}"
            )
    if topic.feed_id is not None and store.get_feed(topic.feed_id) is None:
        raise websub.RequestError(f"hub.topic: there is no feed {topic.feed_id}", 404)
