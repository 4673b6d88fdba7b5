"""MDM connectors: what adding one takes, what the API shows of it (never its secret)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from policies.vocabulary import ConnectorKind, SyncOutcome
from server.schemas.common import Answer, Page, Timestamp

CONNECTOR_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# A setting: a tenant, a client id, a URL. The secret is no setting: it is sealed apart.
Setting = Annotated[str, Field(min_length=1, max_length=1024)]
_BASE_FIELDS = frozenset({"name", "kind", "secret", "interval_minutes", "group"})


class _ConnectorRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=CONNECTOR_NAME, description="lower-case letters, digits, - and _")
    secret: str = Field(min_length=1, max_length=65_536, description=(
        "the client secret (intune, jamf; jamf with auth=basic: the password) or the "
        "service account's JSON key (android); stored encrypted, never returned"))
    interval_minutes: int = Field(default=60, ge=5, le=7 * 24 * 60)
    group: str | None = Field(default=None, min_length=1, max_length=255,
                              description="the phones join this group")

    def settings(self) -> dict[str, str]:
        """What the connector keeps in clear: everything but the secret and the basics."""
        return {name: value for name, value in self.model_dump().items()
                if name not in _BASE_FIELDS and value is not None}


class IntuneRequest(_ConnectorRequest):
    kind: Literal["intune"]
    tenant_id: Setting
    client_id: Setting
    graph_url: Setting | None = Field(default=None,
                                      description="default https://graph.microsoft.com")
    login_url: Setting | None = Field(default=None,
                                      description="default https://login.microsoftonline.com")


class JamfRequest(_ConnectorRequest):
    kind: Literal["jamf"]
    url: Setting = Field(description="the Jamf Pro server, https://…")
    client_id: Setting = Field(description="the API client id (auth=basic: a user name)")
    auth: Literal["oauth", "basic"] | None = Field(
        default=None, description="oauth (API client credentials, the default) or basic")


class AndroidRequest(_ConnectorRequest):
    kind: Literal["android"]
    enterprise: Setting = Field(description="enterprises/ID, or ID")
    api_url: Setting | None = Field(
        default=None, description="default https://androidmanagement.googleapis.com")
    token_url: Setting | None = Field(default=None,
                                      description="default: the key file's token_uri")


ConnectorRequest = Annotated[IntuneRequest | JamfRequest | AndroidRequest,
                             Field(discriminator="kind")]


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
