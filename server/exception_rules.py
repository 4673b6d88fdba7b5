"""What makes a grant acceptable, for both doors (the admin API and the dashboard).

Each refusal names the field it is about, so the API answers a 422 pointing at it and
the dashboard shows the message beside the form; nothing is stored.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Container
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.exceptions import MAX_EXCEPTION_DAYS
from server.models import Agent, EnrollSecret
from server.store.exceptions import Scope


class GrantRefused(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Grant:
    app: str
    scope: Scope
    until: dt.datetime
    reason: str


def check_grant(session: Session, apps: Container[str], app: str, host: str | None,
                group: str | None, until: dt.datetime, reason: str,
                now: dt.datetime) -> Grant:
    if app not in apps:
        raise GrantRefused("app", f"unknown app {app!r}: use a catalog id such as 'telegram' "
                                  "(`warden policy apps` or GET /api/v1/recommendations/{app})")
    if (host is None) == (group is None):
        raise GrantRefused("host", "give exactly one of `host` (an agent id or hostname) and "
                                   "`group`")
    if until.tzinfo is None:
        raise GrantRefused("until", "`until` needs a time zone, e.g. 2026-01-31T17:00:00Z")
    until = until.astimezone(dt.UTC)
    if until <= now:
        raise GrantRefused("until", f"`until` ({until.isoformat()}) is in the past; give a "
                                    "time to come")
    if until > now + dt.timedelta(days=MAX_EXCEPTION_DAYS):
        raise GrantRefused("until", f"`until` is more than {MAX_EXCEPTION_DAYS} days ahead; "
                                    "grant at most a year, and extend it later")
    if not reason.strip():
        raise GrantRefused("reason", "`reason` is empty: say why this exception is needed")
    if host is not None:
        scope = Scope(agent_id=find_agent(session, host))
    else:
        assert group is not None
        if not _group_known(session, group):
            raise GrantRefused("group", f"unknown group {group!r}: no agent is in it and no "
                                        "enrollment secret enrolls into it")
        scope = Scope(group=group)
    return Grant(app=app, scope=scope, until=until, reason=reason.strip())


def find_agent(session: Session, host: str) -> str:
    """The id of the one live agent that `host` names (its id, or its hostname)."""
    live = Agent.revoked_at.is_(None)
    by_id = session.scalar(sa.select(Agent.id).where(Agent.id == host, live))
    if by_id is not None:
        return by_id
    ids = list(session.scalars(sa.select(Agent.id).where(Agent.hostname == host, live).limit(2)))
    if not ids:
        raise GrantRefused("host", f"unknown host {host!r}: give an enrolled agent's id or "
                                   "hostname (`warden agents list`)")
    if len(ids) > 1:
        raise GrantRefused("host", f"several agents are called {host!r}: give the agent id")
    return ids[0]


def _group_known(session: Session, group: str) -> bool:
    return session.scalar(sa.select(sa.exists().where(Agent.group == group))) or \
        bool(session.scalar(sa.select(sa.exists().where(EnrollSecret.group == group))))
