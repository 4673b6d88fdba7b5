"""Violations (one row per machine x denied app) and daily compliance snapshots per group.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

A violation gathers every deny finding of one app on one machine; the server
keeps it up to date at ingest (server.store.violations). Existing findings are
gathered here, once, so a database migrated from before violations lists the
same violations as one that had them all along. Triage carries over where all
of a violation's findings agree on it; otherwise the violation starts `new`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_json = sa.JSON().with_variant(JSONB(), "postgresql")
_BATCH = 1000


def _time(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    violations = op.create_table(
        "violations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("agent_id", sa.String(36), sa.ForeignKey("agents.id"), nullable=False),
        sa.Column("app", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("first_seen"),
        _time("last_seen"),
        _time("opened_at"),
        _time("resolved_at", nullable=True),
        sa.Column("findings", sa.Integer, nullable=False),
        sa.Column("open_findings", sa.Integer, nullable=False),
        sa.Column("sensor_counts", _json, nullable=False),
        sa.Column("triage", sa.String(16), nullable=False),
        sa.Column("triage_comment", sa.Text, nullable=True),
        sa.Column("triage_by", sa.String(255), nullable=True),
        _time("triage_at", nullable=True),
        sa.UniqueConstraint("agent_id", "app", name="uq_violations_agent_app"),
    )
    op.create_index("ix_violations_last_seen_id", "violations", ["last_seen", "id"])
    op.create_index("ix_violations_status_app", "violations", ["status", "app"])
    op.create_index("ix_violations_status_last_seen_id", "violations",
                    ["status", "last_seen", "id"])
    op.create_table(
        "compliance_snapshots",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("group", sa.String(255), nullable=False),
        sa.Column("compliant", sa.Integer, nullable=False),
        sa.Column("with_open_violation", sa.Integer, nullable=False),
        sa.Column("silent", sa.Integer, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("open_by_app", _json, nullable=False),
        _time("taken_at"),
        sa.UniqueConstraint("day", "group", name="uq_compliance_snapshots_day_group"),
    )
    _backfill(op.get_bind(), violations)


def _backfill(connection: sa.Connection, violations: sa.Table) -> None:
    findings = sa.table(
        "findings", sa.column("agent_id", sa.String), sa.column("app", sa.String),
        sa.column("sensor", sa.String), sa.column("verdict", sa.String),
        sa.column("status", sa.String), sa.column("count", sa.Integer),
        sa.column("triage", sa.String), sa.column("triage_comment", sa.Text),
        sa.column("triage_by", sa.String),
        sa.column("first_seen", sa.DateTime(timezone=True)),
        sa.column("last_seen", sa.DateTime(timezone=True)),
        sa.column("resolved_at", sa.DateTime(timezone=True)),
        sa.column("triage_at", sa.DateTime(timezone=True)))
    is_open = sa.case((findings.c.status == "open", 1), else_=0)
    query = (
        sa.select(findings.c.agent_id, findings.c.app, findings.c.sensor,
                  sa.func.count().label("rows"), sa.func.sum(findings.c.count).label("seen"),
                  sa.func.sum(is_open).label("open"),
                  sa.func.min(findings.c.first_seen).label("first_seen"),
                  sa.func.max(findings.c.last_seen).label("last_seen"),
                  sa.func.min(sa.case((findings.c.status == "open", findings.c.first_seen)))
                  .label("open_since"),
                  sa.func.max(findings.c.resolved_at).label("resolved_at"),
                  sa.func.min(findings.c.triage).label("triage_low"),
                  sa.func.max(findings.c.triage).label("triage_high"),
                  sa.func.max(findings.c.triage_at).label("triage_at"))
        .where(findings.c.verdict == "deny")
        .group_by(findings.c.agent_id, findings.c.app, findings.c.sensor)
        .order_by(findings.c.agent_id, findings.c.app))
    gathered: dict[tuple[str, str], dict[str, Any]] = {}
    for row in connection.execute(query):
        one = gathered.setdefault((row.agent_id, row.app), {
            "agent_id": row.agent_id, "app": row.app, "rows": 0, "open": 0, "counts": {},
            "first_seen": row.first_seen, "last_seen": row.last_seen, "open_since": None,
            "resolved_at": None, "triage": set(), "triage_at": None})
        one["rows"] += row.rows
        one["open"] += row.open
        one["counts"][row.sensor] = int(row.seen or 0)
        one["first_seen"] = min(one["first_seen"], row.first_seen)
        one["last_seen"] = max(one["last_seen"], row.last_seen)
        one["open_since"] = _least(one["open_since"], row.open_since)
        one["resolved_at"] = _most(one["resolved_at"], row.resolved_at)
        one["triage"] |= {row.triage_low, row.triage_high}
        one["triage_at"] = _most(one["triage_at"], row.triage_at)
    batch = [_violation(one) for one in gathered.values()]
    for start in range(0, len(batch), _BATCH):
        connection.execute(violations.insert(), batch[start:start + _BATCH])


def _violation(one: dict[str, Any]) -> dict[str, Any]:
    is_open = one["open"] > 0
    agreed = one["triage"] if len(one["triage"]) == 1 else {"new"}
    triage = next(iter(agreed))
    return {
        "agent_id": one["agent_id"], "app": one["app"],
        "status": "open" if is_open else "resolved",
        "first_seen": one["first_seen"], "last_seen": one["last_seen"],
        "opened_at": one["open_since"] if is_open else one["first_seen"],
        "resolved_at": None if is_open else (one["resolved_at"] or one["last_seen"]),
        "findings": one["rows"], "open_findings": one["open"],
        "sensor_counts": one["counts"], "triage": triage, "triage_comment": None,
        "triage_by": None, "triage_at": one["triage_at"] if triage != "new" else None,
    }


def _least(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _most(a: dt.datetime | None, b: dt.datetime | None) -> dt.datetime | None:
    return b if a is None else a if b is None else max(a, b)


def downgrade() -> None:
    op.drop_table("compliance_snapshots")
    op.drop_index("ix_violations_status_last_seen_id", table_name="violations")
    op.drop_index("ix_violations_status_app", table_name="violations")
    op.drop_index("ix_violations_last_seen_id", table_name="violations")
    op.drop_table("violations")
