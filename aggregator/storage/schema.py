"""Running the Alembic migrations from the application.

The migrations live in the repository's top-level ``migrations/`` folder and
are installed with the package as ``aggregator.migrations`` (see
pyproject.toml), so ``aggregator db upgrade`` works from a plain
``pip install .``. Several processes starting at once (web workers, the
daemon) do not race: on PostgreSQL the upgrade runs under an advisory lock, on
a SQLite file under an exclusive ``flock`` of ``<database>-upgrade.lock`` beside
it; whoever comes second finds the schema at head and has nothing to do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

# Arbitrary constant key for pg_advisory_lock: "aggregator migrate".
MIGRATION_LOCK_KEY = 0x61676772_6D696772 & 0x7FFFFFFFFFFFFFFF


def script_location() -> Path:
    return Path(str(resources.files("aggregator.migrations")))


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _file_lock(engine: Engine) -> Iterator[None]:
    """Exclusive lock for the upgrade of a SQLite file (nothing for other databases)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        yield
        return
    with open(f"{database}-upgrade.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    config = alembic_config()
    with _file_lock(engine), engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            conn.commit()
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
        finally:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                conn.commit()
