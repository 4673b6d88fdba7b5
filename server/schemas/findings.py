"""Findings as the API answers them, their timeline, triage, and the list and export queries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from policies.vocabulary import OutcomeState, TriageState
from server.schemas.common import (
    DEFAULT_LIMIT,
    MAX_ROW_ID,
    Answer,
    Cursor,
    Limit,
    Page,
    Timestamp,
)
from server.schemas.filters import FindingFilters, Order


def _as_object(value: Any) -> Any:
    # JSON columns hold what was written: rows from before ingest checked evidence, or
    # written by hand, may hold null, a list or a number. The answer is still an object.
    if value is None:
        return {}
    return value if isinstance(value, dict) else {"value": value}


StoredObject = Annotated[dict[str, Any], BeforeValidator(_as_object)]
# One bulk triage request at most: one transaction, one audit entry per finding.
MAX_BULK_TRIAGE = 1000



class ActionOutcome(Answer):
    """What became of one action the agent ran on the finding (its latest result)."""

    action: str = Field(description="`notify` or `terminate`")
    state: OutcomeState = Field(description="`done`, `failed` (`detail` says why) or "
                                            "`would_have` (audit mode held it back)")
    detail: str
    time: str = Field(description="when the agent ran it (RFC 3339)")


class Finding(Answer):
    """One app seen on one machine by one sensor; `status` is the agent's, `triage` the
    reviewers'."""

    id: int
    agent_id: str
    host: str | None = Field(description="the agent's hostname")
    group: str | None = Field(description="the agent's group")
    app: str
    sensor: str
    key: str
    verdict: str
    action: str
    # Read back as stored: the server writes `open` or `resolved`, but a row is whatever
    # the database holds, and one odd row must not make a whole page answer 500.
    status: str = Field(description="`open` or `resolved`")
    triage: TriageState
    triage_comment: str | None
    triage_by: str | None
    triage_by_name: str | None = Field(default=None,
                                       description="who triaged it, for people (`alice`)")
    triage_at: Timestamp | None
    evidence: StoredObject = Field(description="what the agent reported: pid, exe, package "
                                                 "id, bundle id, path, remote address, …")
    alternative: str | None
    confidence: str | None
    message: str
    matched: str
    first_seen: Timestamp
    last_seen: Timestamp
    resolved_at: Timestamp | None
    count: int
    # Defaults: an older server's answer still reads.
    outcomes: list[ActionOutcome] = Field(
        default_factory=list, description="each action's outcome as the agent reported it; "
                                          "`action` is only what the policy asked for")
    outcome: str = Field(default="", description="the outcomes in one line, e.g. `notify: "
                                                 "failed (notify-send not found)`")


class FindingEvent(Answer):
    id: str
    type: str
    time: Timestamp
    received_at: Timestamp
    finding_key: str | None
    payload: StoredObject = Field(description="the event as the agent sent it")


class FindingDetail(Finding):
    events: list[FindingEvent] = Field(description="the finding's timeline, oldest first")


FindingPage = Page[Finding]


class TriageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: TriageState
    comment: str = Field(default="", max_length=4000)


class BulkTriageRequest(BaseModel):
    """Several findings to one triage state at once: all of them, or (an id unknown) none."""

    model_config = ConfigDict(extra="forbid")

    ids: list[Annotated[int, Field(ge=1, le=MAX_ROW_ID)]] = Field(
        min_length=1, max_length=MAX_BULK_TRIAGE,
        description=f"the findings' ids; at most {MAX_BULK_TRIAGE} per request")
    state: TriageState
    comment: str = Field(default="", max_length=4000)


class BulkTriageResult(Answer):
    items: list[Finding] = Field(description="the findings as they are now, in `ids` order")


class FindingListQuery(FindingFilters):
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None
    order: Order = "last_seen"
    direction: Literal["desc", "asc"] = "desc"


class FindingExportQuery(FindingFilters):
    format: Literal["csv", "json"]


class FindingExport(Answer):
    """`GET findings/export?format=json`: every matching finding, newest id first."""

    items: list[Finding]
