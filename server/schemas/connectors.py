"""MDM connectors: what adding one takes, what the API shows of it (never its secret)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.vocabulary import ConnectorKind, SyncOutcome
from server.schemas.common import Answer, Page, Timestamp

CONNECTOR_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_SETTING = Field(default=None, min_length=1, max_length=1024)
# What each kind needs beside its secret; the rest of the fields are optional URLs.
REQUIRED: dict[str, tuple[str, ...]] = {
    "intune": ("tenant_id", "client_id"),
    "jamf": ("url", "client_id"),
    "android": ("enterprise",),
}
SETTING_FIELDS = ("tenant_id", "client_id", "url", "auth", "enterprise", "graph_url",
                  "login_url", "api_url", "token_url")


class ConnectorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CONNECTOR_NAME, description="lower-case letters, digits, - and _")
    kind: ConnectorKind
    secret: str = Field(min_length=1, max_length=65_536, description=(
        "the client secret (intune, jamf; jamf with auth=basic: the password) or the "
        "service account's JSON key (android); stored encrypted, never returned"))
    tenant_id: str | None = _SETTING
    client_id: str | None = Field(default=None, min_length=1, max_length=1024,
                                  description="jamf with auth=basic: the user name")
    url: str | None = Field(default=None, min_length=1, max_length=1024,
                            description="jamf: the Jamf Pro server, https://…")
    auth: Literal["oauth", "basic"] | None = None
    enterprise: str | None = _SETTING
    graph_url: str | None = _SETTING
    login_url: str | None = _SETTING
    api_url: str | None = _SETTING
    token_url: str | None = _SETTING
    interval_minutes: int = Field(default=60, ge=5, le=7 * 24 * 60)
    group: str | None = Field(default=None, min_length=1, max_length=255,
                              description="the phones join this group")

    @model_validator(mode="after")
    def _needs(self) -> ConnectorRequest:
        missing = [name for name in REQUIRED[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} connector needs {', '.join(missing)}")
        return self

    def settings(self) -> dict[str, str]:
        return {name: value for name in SETTING_FIELDS
                if (value := getattr(self, name)) is not None}


class SyncCounts(Answer):
    devices: int
    apps: int
    findings_opened: int
    findings_resolved: int
    devices_retired: int = 0
    notes: list[str] = Field(default_factory=list)


class ConnectorRecord(Answer):
    name: str
    kind: ConnectorKind
    source: str = Field(description="the phones' `source`: `KIND:NAME`")
    settings: dict[str, Any]
    interval_minutes: int
    group: str | None
    created_by: str
    created_at: Timestamp
    next_sync_at: Timestamp
    last_sync_at: Timestamp | None
    last_result: SyncOutcome | None
    last_error: str | None
    last_counts: SyncCounts | None
    last_success_at: Timestamp | None
    syncing: bool
    hosts: int | None = Field(default=None, description="phones it reports (not retired)")


ConnectorPage = Page[ConnectorRecord]
