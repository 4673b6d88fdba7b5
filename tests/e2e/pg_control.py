"""The machine's PostgreSQL for whole-system tests: a database of one's own, and outages.

A server process gets a fresh database (not a schema): it runs its own
migrations and connection pool against it, exactly as in production, and the
database is dropped afterwards even if connections linger (`WITH (FORCE)`).

`outage()` stops the cluster and always starts it again, even when the code
inside fails, so no later test (or another engineer's) is left without it.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

PG_ENV = "WARDEN_TEST_DATABASE_URL"
READY_TIMEOUT = 60.0


def base_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@contextmanager
def fresh_database(url: str, prefix: str = "warden_fault") -> Iterator[str]:
    """A new, empty database on the server `url` points at; its URL, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool,
                             isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            wait_ready(url)
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def _cluster(action: str) -> None:
    versions = sorted(path.name for path in Path("/etc/postgresql").iterdir())
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", action],
                   check=True, capture_output=True, timeout=120)


def can_control_cluster() -> bool:
    """pg_ctlcluster is here and the cluster is local (we are on the database's machine)."""
    return Path("/etc/postgresql").is_dir() and any(Path("/etc/postgresql").iterdir()) \
        and subprocess.run(["which", "pg_ctlcluster"], capture_output=True).returncode == 0


def wait_ready(url: str, timeout: float = READY_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.execute(sa.text("SELECT 1"))
                return
            except sa.exc.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)  # polling the server's readiness, with a deadline
    finally:
        engine.dispose()


@contextmanager
def outage(url: str) -> Iterator[None]:
    """PostgreSQL stopped (fast shutdown: sessions are cut) for the block; then back up."""
    _cluster("stop")
    try:
        yield
    finally:
        _cluster("start")
        wait_ready(url)
