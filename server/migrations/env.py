"""Alembic environment: migrations run from code (`server.db.run_migrations`).

The caller hands over an open connection in `config.attributes["connection"]`,
so the migration shares its transaction (and, on PostgreSQL, its advisory
lock). For ad-hoc use with the `alembic` command, `sqlalchemy.url` in the
config is used instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from server.db import create_engine
from server.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no connection given and no sqlalchemy.url configured")
    engine = create_engine(url)
    try:
        with engine.begin() as own_connection:
            _run(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported")
run_migrations_online()
