"""The fleet at a glance: agents by state, compliance, open findings, openings per day."""

from __future__ import annotations

from pydantic import Field

from server.schemas.common import Answer


class AgentCounts(Answer):
    active: int
    silent: int
    revoked: int


class Compliance(Answer):
    compliant: int
    with_open_deny: int
    silent: int
    total: int = Field(description="agents not revoked")
    cannot_notify: int = Field(description="agents not revoked whose latest notification "
                                           "failed: their users cannot be told")


class DayCount(Answer):
    day: str = Field(json_schema_extra={"format": "date"})
    opened: int


class FleetStats(Answer):
    agents: AgentCounts
    compliance: Compliance
    open_findings_by_app: dict[str, int]
    findings_per_day: list[DayCount] = Field(description="the last 30 UTC days, today last")
