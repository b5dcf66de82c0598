"""Storage: the one facade over the database.

Everything that reads or writes the database goes through :class:`Storage`,
which takes and returns the plain records of :mod:`aggregator.models` and
raises the errors below; no ORM row, session or SQLAlchemy exception leaves
this package. SQLite and PostgreSQL share one code path (SQLAlchemy Core).
"""

from aggregator.storage.facade import (
    FeedExistsError,
    SchemaOutOfDateError,
    Storage,
    StorageError,
    StorageUnavailableError,
)


def open_storage(url: str, *, upgrade: bool | None = None) -> Storage:
    """Open the database and make sure its schema is current.

    The embedded default (SQLite) upgrades itself; other databases must be
    upgraded with ``aggregator db upgrade`` (``upgrade=None``), and processes
    refuse to start on an out-of-date schema (:class:`SchemaOutOfDateError`).
    """
    storage = Storage(url)
    try:
        storage.ensure_schema(auto_upgrade=storage.is_sqlite if upgrade is None else upgrade)
    except BaseException:
        storage.close()
        raise
    return storage


__all__ = [
    "open_storage",
    "FeedExistsError",
    "SchemaOutOfDateError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
]
