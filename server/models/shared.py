"""State several server processes share (throttles, logouts) and MDM connectors."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from server.db import utcnow
from server.models.base import Base, JSONType


class ThrottleFailures(Base):
    """One rate-limited key's recent failures (server.throttling): shared by every server
    process on the database, so N processes allow what one does."""

    __tablename__ = "throttle_failures"
    __table_args__ = (sa.Index("ix_throttle_failures_scope_last", "scope", "last_failed_at"),)

    # What is limited ("login", "enroll"): each scope has its own window and pruning.
    scope: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    # Who is limited: "account:bob", "address:203.0.113.7"...
    key: Mapped[str] = mapped_column(sa.String(320), primary_key=True)
    # When each failure in the window happened, oldest first: a JSON list of epoch seconds.
    # Wall-clock time, not monotonic: the processes sharing a row share only that clock.
    failures: Mapped[str] = mapped_column(sa.Text, default="[]")
    # The newest failure (epoch seconds), what pruning goes by.
    last_failed_at: Mapped[float] = mapped_column(sa.Float)


class RevokedSession(Base):
    """A dashboard session logged out before it expired: refused by every server process."""

    __tablename__ = "revoked_sessions"

    sid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # When the session would have expired anyway (epoch seconds); the row is pruned after.
    expires_at: Mapped[float] = mapped_column(sa.Float, index=True)


class Connector(Base):
    """An MDM the server reads phones and their apps from (server.connectors)."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    # Tenant, client id, URLs, enterprise: nothing secret.
    settings: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # The client secret or service-account key, Fernet-encrypted with the key in the data
    # directory (server.crypto.secretbox): the database alone does not give it away.
    secret: Mapped[str] = mapped_column(sa.Text)
    interval_minutes: Mapped[int] = mapped_column(default=60)
    # Phones of this connector join this group (scope, exceptions, filters).
    group: Mapped[str | None] = mapped_column(sa.String(255))
    created_by: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_sync_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_sync_at: Mapped[dt.datetime | None]
    last_result: Mapped[str | None] = mapped_column(sa.String(16))
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    last_counts: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    last_success_at: Mapped[dt.datetime | None]
    # One sync at a time across server processes: whoever set the lease (until it
    # expires) runs it; see server.store.connectors.claim.
    lease_owner: Mapped[str | None] = mapped_column(sa.String(64))
    lease_until: Mapped[dt.datetime | None]
