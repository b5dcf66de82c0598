"""Structured logging: one event per line, as key=value or JSON.

Code logs *events* with :func:`event` (a name and fields); the formatter set
by ``log_format`` renders them. Records from other libraries render the same
way with their message in ``msg``. Each line is written once, by the one
handler installed here on the root logger.

Secrets never reach the log: URL passwords and query parameters that look
like credentials are masked in every field (:func:`redact`), and settings are
logged only through ``Settings.redacted()``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = re.compile(r"(token|key|secret|password|passwd|pwd|auth|signature|sig)$", re.I)
_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"<>]+")
_HANDLER_MARK = "_aggregator_handler"


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMS.search(name) for name, _ in pairs):
            query = urlencode([(n, "***" if _SECRET_PARAMS.search(n) else v) for n, v in pairs])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(value: Any) -> Any:
    """``value`` with credentials in any URL it contains masked."""
    if isinstance(value, str) and "://" in value:
        return _URL.sub(lambda m: _redact_url(m.group(0)), value)
    return value


def _kv_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if text == "" or any(ch in text for ch in ' "=\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: ``name`` and its fields (values are redacted)."""
    if not logger.isEnabledFor(level):
        return
    clean = {key: redact(value) for key, value in fields.items()}
    message = " ".join([name, *(f"{key}={_kv_value(value)}" for key, value in clean.items())])
    logger.log(level, message, extra={"event": name, "fields": clean})


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=INFO logger=aggregator.ingest event=fetch feed=3 outcome=ok``"""

    def format(self, record: logging.LogRecord) -> str:
        head = f"ts={_timestamp(record)} level={record.levelname} logger={record.name}"
        name = getattr(record, "event", None)
        if name is not None:
            fields = getattr(record, "fields", {})
            body = " ".join([f"event={name}", *(f"{k}={_kv_value(v)}" for k, v in fields.items())])
        else:
            body = f"msg={_kv_value(redact(record.getMessage()))}"
        line = f"{head} {body}"
        if record.exc_info:
            line += " exc=" + _kv_value(self.formatException(record.exc_info))
        return line


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event (or msg), and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name}
        name = getattr(record, "event", None)
        if name is not None:
            data["event"] = name
            for key, value in getattr(record, "fields", {}).items():
                data.setdefault(key, value)
        else:
            data["msg"] = redact(record.getMessage())
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def setup(level: str = "INFO", fmt: str = "kv", stream: TextIO | None = None) -> None:
    """Install the one handler on the root logger (replacing ours, keeping others')."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else KeyValueFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(numeric)
    for noisy in ("apscheduler", "httpx", "httpcore", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    logging.getLogger("waitress").setLevel(max(numeric, logging.INFO))
