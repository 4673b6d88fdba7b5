"""Violations as the API answers them, with their findings, triage, and the list queries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.vocabulary import TriageState
from server.schemas.common import DEFAULT_LIMIT, Answer, Cursor, Limit, Page, Timestamp
from server.schemas.filters import ViolationFilters, ViolationOrder
from server.schemas.findings import Finding


class Violation(Answer):
    """One denied app on one machine: every finding of it there, gathered. `status` is open
    while any of its findings is; `triage` is the reviewers' and carries to its findings."""

    id: int
    agent_id: str
    host: str | None = Field(description="the agent's hostname")
    group: str | None = Field(description="the agent's group")
    app: str
    status: str = Field(description="`open` or `resolved`")
    first_seen: Timestamp
    last_seen: Timestamp
    opened_at: Timestamp = Field(description="when the current episode opened (a violation "
                                             "seen again after it was resolved reopens)")
    resolved_at: Timestamp | None
    finding_count: int = Field(description="how many findings it gathers")
    open_finding_count: int
    sensor_counts: dict[str, int] = Field(description="sightings per sensor")
    sightings: int = Field(description="sightings over all sensors")
    triage: TriageState
    triage_comment: str | None
    triage_by: str | None
    triage_at: Timestamp | None


class ViolationDetail(Violation):
    findings: list[Finding] = Field(description="the evidence: its findings, most recently "
                                                "seen first")


ViolationPage = Page[Violation]


class ViolationTriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: TriageState
    comment: str = Field(default="", max_length=4000)


class ViolationListQuery(ViolationFilters):
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None
    order: ViolationOrder = "last_seen"
    direction: Literal["desc", "asc"] = "desc"


class ViolationExportQuery(ViolationFilters):
    format: Literal["csv", "json"]


class ViolationExport(Answer):
    """`GET violations/export?format=json`: every matching violation, newest id first."""

    items: list[Violation]
