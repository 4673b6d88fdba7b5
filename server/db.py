"""The database engine, sessions and migrations, for SQLite and PostgreSQL alike.

SQLite notes (why the connect/begin hooks exist): WAL lets readers run beside
the one writer; `busy_timeout` makes a second writer wait instead of failing.
But a *deferred* transaction that reads and then writes can still fail at once
with SQLITE_BUSY if another writer committed in between (the lock cannot be
upgraded on a stale snapshot, and waiting would not help). So sessions that
will write are opened on `writer(engine)`, whose transactions start with
`BEGIN IMMEDIATE` and take the write lock up front. Python's sqlite3 module
would otherwise issue its own BEGINs; `isolation_level = None` stops that so
SQLAlchemy's begin hook is the only one.

Writers of one process also queue on a Python lock before `BEGIN IMMEDIATE`.
SQLite's busy handler sleeps and polls (up to 100 ms a nap), so under load a
waiting writer wakes late and latency grows a long tail; a lock hands over at
once. Other processes on the same file still wait through `busy_timeout`.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from importlib import resources
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 30_000
_WRITE_OPTION = "warden_write"
# Any fixed number: serialises concurrent `warden server init`/starts on one PostgreSQL.
_MIGRATION_LOCK_ID = 0x5741_5244
# The newest revision in server/migrations/versions/ (tests/server/test_db.py checks it is
# Alembic's head). A start on a database already there reads its revision, under the
# migration lock, instead of loading Alembic and every migration script: 0.2 s of CPU of
# each `warden server run`.
SCHEMA_HEAD = "0012"


def create_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        # As many connections as the server's worker threads (anyio's default is 40):
        # a smaller pool makes requests wait for, or churn through, overflow connections.
        engine = sa.create_engine(url, connect_args={"check_same_thread": False},
                                  pool_size=20, max_overflow=30)
        gate = _SqliteWriterGate()
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", gate.begin)
        event.listen(engine, "commit", gate.end)
        event.listen(engine, "rollback", gate.end)
        # A connection going back to the pool mid-transaction is rolled back there, without
        # the "rollback" event: release on check-in too, or the gate would stay shut.
        event.listen(engine.pool, "checkin", gate.checked_in)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def writer(engine: Engine) -> Engine:
    """The same engine, flagged so SQLite transactions take the write lock first."""
    return engine.execution_options(**{_WRITE_OPTION: True})


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # Rows outlive the commit so a handler can answer from them after committing.
    return sessionmaker(bind=engine, expire_on_commit=False)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Safe with WAL: a power cut may lose the last commits, never corrupt the file.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class _SqliteWriterGate:
    """One write transaction at a time per engine (see the module docstring)."""

    _HOLDS = "warden_holds_writer_gate"

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def begin(self, connection: Connection) -> None:
        if not connection.get_execution_options().get(_WRITE_OPTION, False):
            connection.exec_driver_sql("BEGIN")
            return
        if not self._lock.acquire(timeout=SQLITE_BUSY_TIMEOUT_MS / 1000):
            raise sa.exc.OperationalError(
                "BEGIN IMMEDIATE", None,
                sqlite3.OperationalError("database is locked (other writers in this process)"))
        connection.info[self._HOLDS] = True
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            self._release(connection.info)
            raise

    def end(self, connection: Connection) -> None:
        self._release(connection.info)

    def checked_in(self, _dbapi_connection: Any, record: Any) -> None:
        self._release(record.info)

    def _release(self, info: dict[Any, Any]) -> None:
        if info.pop(self._HOLDS, False):
            self._lock.release()


def ping(engine: Engine) -> bool:
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        return False
    return True


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(resources.files("server") / "migrations"))
    return config


def run_migrations(engine: Engine) -> None:
    """Bring the schema to the newest revision, in one transaction."""
    with writer(engine).begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"),
                               {"id": _MIGRATION_LOCK_ID})
        if schema_revision(connection) == SCHEMA_HEAD:
            return
        from alembic import command

        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_revision(connection: Connection) -> str | None:
    """The revision the database records; None when it records none (a new database, or
    one downgraded to the start). Alembic's MigrationContext would say the same, but
    importing it is what a start on a current database saves."""
    if not sa.inspect(connection).has_table("alembic_version"):
        return None
    revisions = connection.execute(sa.text("SELECT version_num FROM alembic_version"))
    return ",".join(revisions.scalars()) or None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes on every backend.

    PostgreSQL keeps the zone; SQLite stores text and hands back naive values.
    Storing naive UTC there and re-attaching UTC on the way out makes both
    behave alike, and keeps SQLite's text comparisons in time order.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware UTC time")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]
