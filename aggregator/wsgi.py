"""WSGI entry point for production servers (the web role without the scheduler).

    gunicorn --workers 4 'aggregator.wsgi:make_app()'

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
