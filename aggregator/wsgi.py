r"""WSGI entry point for production servers (the web role without the scheduler).

    granian --interface wsgi --factory --workers 2 --blocking-threads 4 --host 0.0.0.0 --port 8080 \
        --http 1 --no-ws --respawn-failed-workers aggregator.wsgi:make_app

(granian is the ``server`` extra: ``pip install '.[server]'``; ``--factory`` because
``make_app`` builds the app; one worker per core). Any WSGI server works the same way,
e.g. ``gunicorn --worker-class gthread --workers 2 --threads 4 'aggregator.wsgi:make_app()'``.

Settings come from ``AGGREGATOR_CONFIG`` and ``AGGREGATOR_*`` variables, as for
the command line, logging included (``log_level``, ``log_format``). The app refuses
to start on a database whose schema is out of date (run ``aggregator db upgrade``
first); the SQLite default upgrades itself.
"""

from __future__ import annotations

import sys

from flask import Flask

from aggregator import config, logs
from aggregator.storage import open_storage
from aggregator.web import create_app


def granian_command(
    host: str, port: int, *, workers: int = 2, threads: int = 4, kill_timeout: int = 10
) -> list[str]:
    """The granian command line above (docker-compose.yml's web command) for this
    interpreter: what ``scripts/topology.py`` and ``benchmarks/serve.py`` start.
    ``kill_timeout``: seconds before a worker that missed the stop signal (one still
    loading the app) is killed; without it granian waits for it forever."""
    return [
        sys.executable, "-m", "granian",
        "--interface", "wsgi",
        "--factory",
        "--workers", str(workers),
        "--blocking-threads", str(threads),
        "--host", host,
        "--port", str(port),
        "--http", "1",
        "--no-ws",
        "--respawn-failed-workers",
        "--workers-kill-timeout", str(kill_timeout),
        "--log-level", "warning",
        "aggregator.wsgi:make_app",
    ]  # fmt: skip


def make_app() -> Flask:
    settings = config.load()
    logs.setup(settings.log_level, settings.log_format)
    return create_app(settings, open_storage(settings.database_url))
