"""Re-enrollments held for an administrator (docs/api.md, "Proof of possession")."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from server.schemas.common import DEFAULT_LIMIT, Answer, Limit, Page, Query, Timestamp


class Reenrollment(Answer):
    agent_id: str
    agent_hostname: str = Field(description="the enrolled machine's hostname")
    public_key: str | None = Field(description="the key the request asks to bind (base64); "
                                               "null from an agent before machine keys")
    hostname: str = Field(description="the hostname the request gives")
    facts: dict[str, Any] = Field(description="the host facts the request gives")
    address: str = Field(description="where the request came from")
    reason: str = Field(description="why it was not let in by itself")
    requested_at: Timestamp
    last_attempt_at: Timestamp
    attempts: int = Field(description="how often this request asked (the agent retries)")
    keys_seen: int = Field(description="how many different keys asked while pending: more "
                                       "than one means two parties claim this machine")
    approved_at: Timestamp | None
    approved_by: str | None


ReenrollmentPage = Page[Reenrollment]


class ReenrollmentListQuery(Query):
    limit: Limit = DEFAULT_LIMIT


class Approval(Answer):
    public_key: str | None = Field(
        default=None, description="the key the administrator reviewed; when given, the "
                                  "approval applies only if the request still carries it")
