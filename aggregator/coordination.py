"""Running several processes against one deployment: roles and the shared index.

A deployment at scale is PostgreSQL (storage and coordination), Redis (the shared
LSH index, datasketch's own Redis storage), several ingest *workers* and several
stateless *web* processes, all from one image (see ``docker-compose.yml``):

``worker``
    the scheduler's tick (claim due feeds, fetch, store; the clustering leader
    also clusters what every worker stored) and the WebSub delivery worker; no
    web server.
``web``
    the web server only: pages, feeds, API, ``POST /websub`` (queued in the
    database); holds no clustering state, so any number can run behind a balancer.
``all``
    both in one process (the embedded default).

How workers stay out of each other's way is written in ``docs/design.md``
("Several processes, one index"): feeds are claimed with ``FOR UPDATE SKIP
LOCKED`` and a lease, one worker at a time is the clustering leader (a
session-level advisory lock) and clusters for all, clustering passes are
serialised by an advisory lock, and a worker catches up with what others
clustered before deciding anything.
This module only turns settings into the parts that need them; it imports no
datasketch or redis itself.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

ROLES = ("all", "worker", "web")


class IndexURLError(ValueError):
    """``index_url`` is not a Redis URL we can use."""


def index_storage_config(url: str | None, name: str) -> dict[str, Any] | None:
    """datasketch's ``storage_config`` for ``index_url`` (None: the in-process index).

    ``redis://[:password@]host[:port][/db]`` (``rediss://`` for TLS); ``name`` becomes
    the basename under which every key of the index lives, so several deployments (or
    tests) can share one Redis with different names or database numbers.
    """
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss"}:
        raise IndexURLError(f"index_url must be redis://host:port/db, not {url!r}")
    path = parts.path.strip("/")
    try:
        db = int(path) if path else int(parse_qs(parts.query).get("db", ["0"])[0])
    except ValueError:
        raise IndexURLError(f"index_url: bad database number in {url!r}") from None
    redis: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": parts.port or 6379, "db": db}
    if parts.username:
        redis["username"] = unquote(parts.username)
    if parts.password:
        redis["password"] = unquote(parts.password)
    if parts.scheme == "rediss":
        redis["ssl"] = True
    return {"type": "redis", "basename": name.encode("utf-8"), "redis": redis}
