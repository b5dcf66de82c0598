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

__all__ = [
    "FeedExistsError",
    "SchemaOutOfDateError",
    "Storage",
    "StorageError",
    "StorageUnavailableError",
]
