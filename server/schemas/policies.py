"""Policy versions, their diff, and the impact preview of activating one."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from server.schemas.common import Answer, Page, Timestamp


class PolicySummary(Answer):
    version_number: int
    version: str = Field(description="the compiled bundle's hash (the agents' ETag)")
    name: str
    mode: str = Field(description="audit or enforce")
    created_at: Timestamp
    created_by: str
    created_by_name: str = Field(default="", description="who uploaded it, for people (`alice`)")
    active: bool = Field(description="the version agents get")


PolicyPage = Page[PolicySummary]


class PolicyDetail(PolicySummary):
    previous: bool = Field(description="the version a rollback would activate")
    source: str = Field(description="the text as uploaded")
    source_format: Literal["yaml", "json"]
    bundle: dict[str, Any] = Field(description="the compiled policy agents receive")
    signature: str = Field(description="Ed25519 over the bundle's canonical JSON, base64")


class PolicyDiff(Answer):
    from_number: int = Field(alias="from")
    to_number: int = Field(alias="to")
    diff: str = Field(description="a unified diff of the two sources; empty when they are "
                                  "the same")


class ImpactTotals(Answer):
    agents_evaluated: int
    agents_affected: int
    findings_evaluated: int
    unevaluable: int
    changes: int
    newly_denied: int
    no_longer_denied: int
    response_changes: int = Field(
        default=0, description="changes in what the agent does (audit -> enforce, notify -> "
                    "terminate), the verdict changed or not")
    newly_terminated: int = Field(default=0, description="of those, findings whose process "
                                                         "the agent would now terminate")


class ImpactChange(Answer):
    agent_id: str
    hostname: str
    group: str | None
    finding_id: int | None = Field(description="null for a recorded observation with no "
                                               "finding yet")
    app: str
    sensor: str
    before: str
    after: str = Field(description="deny, allow, alert, excepted, out_of_scope or none")
    before_response: str = Field(
        default="", description="what the agent does under the active version: report, "
                                "notify, notify + terminate, …; empty when unknown")
    after_response: str = Field(default="", description="what it would do under this one")


class ImpactPreview(Answer):
    version_number: int
    active_version_number: int | None
    version: str | None
    compared_with: str | None
    totals: ImpactTotals = Field(description="always count everything")
    changes: list[ImpactChange] = Field(description="grouped by agent in hostname order, at "
                                                    "most `limit` rows")
    truncated: bool
