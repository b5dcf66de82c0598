"""Operational endpoints: liveness, readiness and Prometheus metrics.

* ``GET /healthz``: liveness. The process answers; nothing else is checked,
  so a database outage does not get a healthy process restarted.
* ``GET /readyz``: readiness. The database answers, its schema is the one this
  code needs, and a scheduler tick (of any process) completed within its
  expected period. 200 or 503, with a small JSON body naming each check.
* ``GET /metrics``: Prometheus text format (see :mod:`aggregator.metrics`).

Also times every request for the ``aggregator_http_*`` metrics, labelled by
the URL rule (``/stories/<int:story_id>``), never by the raw path.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from aggregator import metrics
from aggregator.storage import StorageError
from aggregator.web import common

bp = Blueprint("ops", __name__)


def tick_deadline(tick_seconds: int) -> timedelta:
    """How old the last completed tick may be before the service is not ready:
    three periods, and never less than ten minutes (a tick over many slow
    feeds can legitimately run long)."""
    return timedelta(seconds=max(3 * tick_seconds, 600))


def readiness(now: datetime) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    storage = common.storage()
    try:
        storage.ping()
        checks["database"] = "ok"
        current, head = storage.schema_status()
        checks["schema"] = "ok" if current == head else f"at {current}, needs {head}"
        last, ok = storage.last_tick()
        if last is None:
            checks["tick"] = "no tick has completed yet"
        elif now - last > tick_deadline(common.settings().tick_seconds):
            checks["tick"] = f"last completed tick {int((now - last).total_seconds())} s ago"
        else:
            checks["tick"] = "ok" if ok is not False else "ok (the latest tick failed; retrying)"
    except StorageError as exc:
        checks.setdefault("database", str(exc))
    ready = all(str(value).startswith("ok") for value in checks.values()) and len(checks) == 3
    return ready, checks


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    ready, checks = readiness(datetime.now(UTC))
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    if not ready:
        response.headers["Retry-After"] = "30"
    return response


@bp.get("/metrics")
def metrics_view() -> Response:
    return Response(metrics.render(common.storage()), mimetype=None, content_type=metrics.CONTENT_TYPE)


def _start_timer() -> None:
    g.aggregator_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    started = g.pop("aggregator_started", None)
    route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    metrics.HTTP_REQUESTS.labels(route=route, method=request.method, status=str(response.status_code)).inc()
    if started is not None:
        metrics.HTTP_SECONDS.labels(route=route).observe(time.perf_counter() - started)
    return response


def install(app: Flask) -> None:
    app.register_blueprint(bp)
    app.before_request(_start_timer)
    app.after_request(_count_request)
