"""Agents as the fleet list shows them, and the list's query."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from policies.vocabulary import AgentState
from server.schemas.common import DEFAULT_LIMIT, Answer, Cursor, Limit, Page, Timestamp
from server.schemas.filters import AgentFilters
from server.schemas.reenrollments import Reenrollment


class AgentView(Answer):
    id: str
    hostname: str
    machine_id: str
    os: str
    os_version: str
    arch: str
    agent_version: str
    user: str
    group: str | None
    enrolled_at: Timestamp
    last_seen: Timestamp
    policy_version: str | None = Field(description="the bundle hash reported at the last "
                                                   "check-in")
    status: dict[str, Any] | None = Field(description="the agent's last reported health")
    revoked_at: Timestamp | None
    state: AgentState
    open_findings: int
    policy_version_number: int | None = Field(
        description="the stored version with that hash, if any")
    policy_current: bool
    public_key: str | None = Field(default=None, description="the machine key bound to this "
                                   "agent (base64); null for an agent before machine keys")
    source: str | None = Field(default=None, description="null for a machine with an agent; "
                               "`KIND:NAME` for a phone an MDM connector reports")
    retired_at: Timestamp | None = Field(default=None, description="when its MDM stopped "
                                         "listing it (phones only)")
    notify_error: str | None = Field(
        default=None, description="why this machine's latest notification failed; null when "
                                  "it worked or none was tried (its user can be told)")
    reenrollment: Reenrollment | None = Field(
        default=None, description="a re-enrollment of this machine held for an administrator")


AgentPage = Page[AgentView]


class AgentListQuery(AgentFilters):
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None
