"""Which exceptions are in force, for the report: those granted on the server
(server.store.exceptions, the `exceptions` table) and those written into the active
policy file (`rules[].exceptions`); both are honoured by agents.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models import Agent, AppException
from server.store import policies


def active_exceptions(session: Session, now: dt.datetime) -> list[dict[str, Any]]:
    """Exceptions in force at `now`, soonest to expire first."""
    found = _from_table(session, now) + _from_policy(_active_bundle(session), now.date())
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
    """Grants in force on the server (not revoked, `until` still ahead)."""
    query = (sa.select(AppException, Agent.hostname)
             .outerjoin(Agent, Agent.id == AppException.agent_id)
             .where(AppException.until > now, AppException.revoked_at.is_(None)))
    return [{"app": grant.app,
             "hosts": [hostname or grant.agent_id] if grant.agent_id else [],
             "groups": [grant.group] if grant.group else [],
             "until": grant.until.isoformat(), "reason": grant.reason, "source": "server"}
            for grant, hostname in session.execute(query)]
