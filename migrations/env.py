"""Alembic environment.

The application passes its own connection (``config.attributes["connection"]``);
the ``alembic`` command line, run from the repository, gets the URL from
``AGGREGATOR_DATABASE_URL`` (or aggregator's default).
"""

from alembic import context
from sqlalchemy import create_engine

from aggregator.storage.tables import Base, include_name

target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from aggregator import config as settings_module

    engine = create_engine(settings_module.load().database_url)
    with engine.connect() as conn:
        _run(conn)
        conn.commit()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run against a database")
run_migrations_online()
