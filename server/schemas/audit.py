"""The audit log: who changed what and when, and the list's query."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from server.schemas.common import (
    DEFAULT_LIMIT,
    Answer,
    Cursor,
    Limit,
    Page,
    Query,
    TextFilter,
    Timestamp,
)


class AuditEntry(Answer):
    id: int
    time: Timestamp
    actor: str = Field(description="who, precisely: `user:ID:NAME`, `token:ID:NAME`, "
                                   "`cli:LOGIN`")
    actor_name: str = Field(default="", description="who, for people: `alice`, `ci (API token)`")
    action: str
    target: str
    before: Any = Field(description="the record before the change (JSON), if any")
    after: Any = Field(description="the record after the change (JSON), if any")


AuditPage = Page[AuditEntry]


class AuditQuery(Query):
    actor: TextFilter = Field(default=None, description="exact, or a prefix ending in *")
    action: TextFilter = Field(default=None, description="exact, or a prefix ending in *")
    target: TextFilter = Field(default=None, description="exact, or a prefix ending in *")
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = None
