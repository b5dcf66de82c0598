r"""WSGI entry point for production servers (the web role without the scheduler).

    granian --interface wsgi --factory --workers 2 --blocking-threads 4 --host 0.0.0.0 --port 8080 \
        --http 1 --no-ws --respawn-failed-workers aggregator.wsgi:make_app

(granian is the ``server`` extra: ``pip install '.[server]'``; ``--factory`` because
``make_app`` builds the app; one worker per core). Any WSGI server works the same way,
e.g. ``gunicorn --worker-class gthread --workers 2 --threads 4 'aggregator.wsgi:make_app()'``.

Settings come from ``AGGREGATOR_CONFIG`` and ``AGGREGATOR_*`` variables, as for
the command line. The app refuses to start on a database whose schema is out
of date (run ``aggregator db upgrade`` first); the SQLite default upgrades itself.
"""

from __future__ import annotations

from flask import Flask

from aggregator import config
from aggregator.storage import open_storage
from aggregator.web import create_app


def make_app() -> Flask:
    settings = config.load()
    return create_app(settings, open_storage(settings.database_url))
