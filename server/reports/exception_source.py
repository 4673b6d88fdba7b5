"""Which exceptions are in force, for the report: one small reader to point at their store.

Exceptions granted on the server (issue 14's exceptions part) live in an
`exceptions` table when that part is installed; until then the only ones are
those written into the active policy file (`rules[].exceptions`). This reader
takes the table when the database has one, and the policy's otherwise, so the
report does not change when the table arrives — only where it reads from.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.store import policies

TABLE = "exceptions"


def active_exceptions(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Exceptions in force at `now`, soonest to expire first."""
    if TABLE in sa.inspect(session.connection()).get_table_names():
        found = _from_table(session, now)
    else:
        found = _from_policy(_active_bundle(session), now.date())
    return sorted(found, key=lambda item: (item["until"], item["app"]))


def _active_bundle(session: Session) -> Mapping[str, Any]:
    active = policies.active(session)
    row = policies.get(session, active.number) if active else None
    return policies.bundle_of(row) if row else {}


def _from_policy(bundle: Mapping[str, Any], today: dt.date) -> list[dict[str, Any]]:
    found = []
    for app, rule in (bundle.get("rules") or {}).items():
        for exception in rule.get("exceptions") or []:
            expires = dt.date.fromisoformat(exception["expires"])
            if expires >= today:  # the engine honours it through its last day
                found.append({"app": app, "hosts": list(exception.get("hosts") or []),
                              "groups": list(exception.get("groups") or []),
                              "until": expires.isoformat(),
                              "reason": exception.get("reason") or "", "source": "policy"})
    return found


def _from_table(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Rows of a server-side exceptions table, read by reflection so this module does not
    depend on its model: `app`, `until`, one of `host`/`hosts`/`agent_id` and
    `group`, `reason`, and optionally `revoked_at` / `status`."""
    table = sa.Table(TABLE, sa.MetaData(), autoload_with=session.connection())
    columns = table.c
    query = sa.select(table)
    if "until" in columns:
        query = query.where(columns["until"] > now)
    if "revoked_at" in columns:
        query = query.where(columns["revoked_at"].is_(None))
    if "status" in columns:
        query = query.where(columns["status"].in_(("active", "approved", "granted")))
    found = []
    for row in session.execute(query).mappings():
        host = row.get("host") or row.get("hostname") or row.get("agent_id")
        until = row.get("until")
        found.append({
            "app": str(row.get("app") or "?"),
            "hosts": [str(host)] if host else list(row.get("hosts") or []),
            "groups": [str(row["group"])] if row.get("group") else [],
            "until": until.isoformat() if isinstance(until, dt.datetime | dt.date)
            else str(until),
            "reason": str(row.get("reason") or ""), "source": "server"})
    return found
