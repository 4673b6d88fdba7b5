"""Compliance over time and the compliance report, as the API answers them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from server.schemas.common import Answer, Query, TextFilter, Timestamp
from server.schemas.violations import Violation

Days = int
MAX_DAYS = 366


class CompliancePoint(Answer):
    """How a group (or the fleet) stood on one UTC day."""

    day: str = Field(json_schema_extra={"format": "date"})
    compliant: int = Field(description="machines with no open violation")
    with_open_violation: int
    silent: int = Field(description="machines that stopped checking in (counted by their "
                                    "last report)")
    total: int = Field(description="machines not revoked")
    compliant_percent: float
    open_by_app: dict[str, int] = Field(description="open violations by app")


class RemediationTime(Answer):
    group: str | None = Field(description="null: machines in no group")
    resolved: int = Field(description="violations resolved in the period, as the daily "
                                      "snapshots recorded them")
    median_days: float = Field(description="median days from opening to resolution: the "
                                           "median of the daily medians, each counted once "
                                           "per violation it stands for")


class ComplianceHistory(Answer):
    days: int
    group: str | None
    points: list[CompliancePoint] = Field(description="one per day with a snapshot, oldest "
                                                      "first")
    time_to_remediate: list[RemediationTime] = Field(description="slowest group first")


class ComplianceHistoryQuery(Query):
    days: int = Field(default=30, ge=1, le=MAX_DAYS, description="how many days back, today "
                                                                 "included")
    group: TextFilter = Field(default=None, description="one group; the whole fleet if absent")


class GroupStanding(Answer):
    group: str | None
    compliant: int
    with_open_violation: int
    silent: int
    total: int
    compliant_percent: float
    open_by_app: dict[str, int]


class ActiveException(Answer):
    """An exception in force: the app, whom it covers, until when, and why."""

    app: str
    hosts: list[str]
    groups: list[str]
    until: str = Field(description="the last day (or moment) it applies")
    reason: str
    source: str = Field(description="where it is recorded: `policy` or `server`")


class ComplianceReport(Answer):
    """What the compliance report shows, in every format."""

    generated_at: Timestamp
    days: int
    group: str | None
    now: GroupStanding = Field(description="the fleet (or the group) now")
    trend: list[CompliancePoint]
    worst_groups: list[GroupStanding] = Field(description="lowest share compliant first")
    time_to_remediate: list[RemediationTime]
    open_violations: list[Violation] = Field(description="most recently seen first, at most "
                                                         "`open_violations_shown`")
    open_violations_total: int
    exceptions: list[ActiveException]


ReportFormat = Literal["pdf", "html", "csv", "json"]


class ComplianceReportQuery(ComplianceHistoryQuery):
    format: ReportFormat = "pdf"
