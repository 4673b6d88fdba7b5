"""The database layer: migrations equal the models, SQLite is set up for concurrency,
times come back aware, and settings refuse what they should."""

from __future__ import annotations

import datetime as dt
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError

from server import db
from server.models import AuditEntry, Base
from server.settings import ServerSettings


@pytest.fixture
def engine(db_url: str) -> Iterator[sa.Engine]:
    engine = db.create_engine(db_url)
    yield engine
    engine.dispose()


def test_migrations_build_exactly_the_models_and_rerun_harmlessly(engine: sa.Engine) -> None:
    db.run_migrations(engine)
    db.run_migrations(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        state = connection.execute(sa.text("SELECT id, active_policy_number FROM server_state"))
        assert state.all() == [(1, None)]
    assert differences == []


def test_the_schema_head_is_alembics_newest_revision() -> None:
    # A new migration must move db.SCHEMA_HEAD too, or starts would skip it.
    head = ScriptDirectory.from_config(db.alembic_config()).get_current_head()
    assert head == db.SCHEMA_HEAD


def test_a_database_a_revision_behind_is_migrated_and_a_current_one_left_alone(
    engine: sa.Engine
) -> None:
    def revision() -> str | None:
        with engine.connect() as connection:
            return db.schema_revision(connection)

    assert revision() is None  # a new database
    db.run_migrations(engine)
    assert revision() == db.SCHEMA_HEAD
    with db.writer(engine).begin() as link:
        config = db.alembic_config()
        config.attributes["connection"] = link
        command.downgrade(config, "-1")
    assert revision() not in (None, db.SCHEMA_HEAD)
    db.run_migrations(engine)
    assert revision() == db.SCHEMA_HEAD
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_a_start_on_a_current_database_does_not_load_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    script = ("import sys\nfrom server import db\n"
              f"db.run_migrations(db.create_engine({url!r}))\n"
              "print('alembic' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True).stdout.split() for _ in range(2)]
    # The first start migrated a new database with Alembic; the second had nothing to do.
    assert runs == [["True"], ["False"]]


def test_sqlite_runs_in_wal_with_foreign_keys(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == \
                db.SQLITE_BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_sqlite_write_sessions_take_the_lock_up_front(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        db.run_migrations(engine)
        with db.session_factory(db.writer(engine))() as writing:
            writing.execute(sa.text("SELECT 1"))
            # Only a read so far, yet the write lock is held: another writer cannot start.
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                    other.execute("BEGIN IMMEDIATE")
                # A reader is not blocked: WAL readers run beside the writer.
                assert other.execute("SELECT count(*) FROM agents").fetchone() == (0,)
            finally:
                other.close()
    finally:
        engine.dispose()


def test_sqlite_writer_gate_reopens_however_a_transaction_ends(tmp_path: Path) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    writes = db.session_factory(db.writer(engine))
    try:
        db.run_migrations(engine)
        with writes() as session:  # closed without commit
            session.execute(sa.text("SELECT 1"))
        with writes() as session:  # failed statement, rolled back
            with pytest.raises(sa.exc.IntegrityError):
                session.execute(sa.text("INSERT INTO server_state (id) VALUES (1)"))
            session.rollback()
        with writes() as session:  # committed
            session.execute(sa.text("SELECT 1"))
            session.commit()
        connection = db.writer(engine).connect()  # connection closed mid-transaction
        connection.execute(sa.text("SELECT 1"))
        connection.close()
        # Each of the above let the gate go: this one starts at once, from another thread.
        done = threading.Event()

        def write() -> None:
            with writes() as session:
                session.execute(sa.text("UPDATE server_state SET previous_policy_number = NULL"))
                session.commit()
            done.set()

        threading.Thread(target=write, daemon=True).start()
        assert done.wait(timeout=10)
    finally:
        engine.dispose()


def test_times_are_aware_utc_on_every_backend(engine: sa.Engine) -> None:
    db.run_migrations(engine)
    local = dt.datetime(2025, 6, 1, 14, 30, 15, 123456,
                        tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with db.session_factory(db.writer(engine))() as session:
        session.add(AuditEntry(time=local, actor="t", action="a", target="x"))
        session.commit()
    with db.session_factory(engine)() as session:
        stored = session.scalars(sa.select(AuditEntry.time)).one()
        assert stored == local
        assert stored.tzinfo is not None and stored.utcoffset() == dt.timedelta(0)
        later = session.scalars(sa.select(sa.func.count()).select_from(AuditEntry).where(
            AuditEntry.time > dt.datetime(2025, 6, 1, 12, 30, 16, tzinfo=dt.UTC))).one()
        assert later == 0
    with db.session_factory(db.writer(engine))() as session:
        session.add(AuditEntry(time=dt.datetime(2025, 1, 1), actor="t", action="a", target="x"))
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.flush()


def test_settings_refuse_plain_http_beyond_loopback(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost"):
        assert ServerSettings(data_dir=tmp_path, host=host).host == host
    with pytest.raises(ValidationError, match="WARDEN_ALLOW_INSECURE"):
        ServerSettings(data_dir=tmp_path, host="0.0.0.0")
    assert ServerSettings(data_dir=tmp_path, host="0.0.0.0", allow_insecure=True)
    tls = ServerSettings(data_dir=tmp_path, host="10.0.0.5", tls_cert=tmp_path / "c.pem",
                         tls_key=tmp_path / "k.pem")
    assert tls.tls_cert is not None
    with pytest.raises(ValidationError, match="both tls_cert and tls_key"):
        ServerSettings(data_dir=tmp_path, tls_cert=tmp_path / "c.pem")


def test_settings_read_env_and_the_config_file_in_that_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("WARDEN_CHECKIN_INTERVAL_SECONDS", "WARDEN_CONFIG_FILE", "WARDEN_DATA_DIR",
                 "WARDEN_PORT", "WARDEN_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "warden.toml").write_text(
        'checkin_interval_seconds = 120\nport = 9000\nalert_webhook_url = "http://127.0.0.1:9/x"\n')
    from_file = ServerSettings(data_dir=tmp_path)
    assert (from_file.checkin_interval_seconds, from_file.port) == (120, 9000)
    assert from_file.alert_webhook_url == "http://127.0.0.1:9/x"
    assert from_file.resolved_database_url == f"sqlite:///{tmp_path / 'warden.db'}"
    monkeypatch.setenv("WARDEN_PORT", "9100")
    assert ServerSettings(data_dir=tmp_path).port == 9100
    assert ServerSettings(data_dir=tmp_path, port=9200).port == 9200
    (tmp_path / "warden.toml").write_text("no_such_setting = 1\n")
    with pytest.raises(ValidationError, match="no_such_setting"):
        ServerSettings(data_dir=tmp_path)
