"""The agent API's request and response bodies (docs/api.md, "Agent API").

Requests ignore unknown keys so a newer agent can talk to an older server;
every field that reaches the database has a length bound, so one request
cannot bloat a row beyond the body-size cap.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

_Short = Field(min_length=1, max_length=255)
# A raw 32-byte Ed25519 public key in base64 (agent/machine.py).
_PUBLIC_KEY = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EnrollProof(_Request):
    signed_at: str = Field(min_length=1, max_length=64,
                           description="ISO 8601 with a zone, exactly as signed")
    signature: str = Field(min_length=1, max_length=128,
                           description="Ed25519 by `public_key` over the canonical JSON of "
                                       '{"purpose": "warden.agent-enrollment", "machine_id", '
                                       '"public_key", "signed_at"}, base64')


class EnrollRequest(_Request):
    hostname: str = _Short
    machine_id: str = _Short
    os: Literal["linux", "macos", "windows"]
    os_version: str = Field(max_length=255)
    arch: str = Field(max_length=64)
    agent_version: str = Field(max_length=64)
    # A service may run with nobody logged in: empty is allowed.
    user: str = Field(default="", max_length=255)
    # Absent from agents before machine keys; together, they prove the sender holds the key.
    public_key: str | None = Field(
        default=None, pattern=_PUBLIC_KEY,
        description="this machine's Ed25519 public key, base64 of the raw 32 bytes")
    proof: EnrollProof | None = Field(
        default=None, description="a statement signed by `public_key`; see docs/api.md, "
                                  "\"Proof of possession\"")

    @model_validator(mode="after")
    def _key_with_proof(self) -> EnrollRequest:
        if (self.public_key is None) != (self.proof is None):
            raise ValueError("public_key and proof go together: send both or neither")
        return self

    def host_facts(self) -> dict[str, str]:
        return self.model_dump(exclude={"public_key", "proof"})


class KeyRotation(BaseModel):
    statement: dict[str, Any] = Field(
        description='{"purpose": "warden.policy-key-rotation", "previous_public_key", '
                    '"public_key", "created_at"}, exactly as signed')
    signature: str = Field(description="Ed25519 by `previous_public_key` over the "
                                       "statement's canonical JSON, base64")


class EnrollResponse(BaseModel):
    agent_id: str
    agent_token: str
    policy_public_key: str = Field(description="base64 of the raw 32-byte Ed25519 public key")
    group: str | None
    key_rotations: list[KeyRotation] = Field(
        default_factory=list,
        description="every rotation of the signing key, oldest first: an agent configured "
                    "with an older key follows them to `policy_public_key`")


class AgentStatus(_Request):
    spool_depth: int | None = Field(default=None, ge=0)
    dropped_events: int | None = Field(default=None, ge=0)
    open_findings: int | None = Field(default=None, ge=0)
    cpu_percent: float | None = Field(default=None, ge=0)
    rss_bytes: int | None = Field(default=None, ge=0)
    uptime_seconds: float | None = Field(default=None, ge=0)
    # Set while the agent refuses the policy it was offered (bad signature, malformed).
    policy_error: str | None = Field(default=None, max_length=1024)
    # The signing key the agent trusts now (base64): who has moved after a key rotation.
    policy_public_key: str | None = Field(default=None, max_length=64)


class CheckinRequest(_Request):
    policy_version: str | None = Field(default=None, max_length=64)
    status: AgentStatus = Field(default_factory=AgentStatus)
    public_key: str | None = Field(
        default=None, pattern=_PUBLIC_KEY,
        description="this machine's public key: bound to the agent if none is bound yet "
                    "(an agent enrolled before machine keys)")


class CheckinResponse(BaseModel):
    policy_etag: str | None = Field(
        description="the active bundle version (no quotes); null while no policy is active")
    policy_public_key: str = Field(
        description="the key the server signs with now; an agent that trusts another fetches "
                    "the policy, whose `key_rotations` lead it there")
    next_checkin_seconds: int


class FindingInfo(_Request):
    key: str = Field(min_length=1, max_length=512)
    app: str | None = Field(default=None, max_length=64)
    sensor: Literal["process", "installed", "network"] | None = None
    verdict: Literal["deny", "allow", "alert"] | None = None
    action: Literal["report", "notify", "terminate"] | None = None
    evidence: dict[str, Any] = Field(default_factory=dict)
    alternative: str | None = Field(default=None, max_length=64)
    confidence: str | None = Field(default=None, max_length=16)
    message: str = Field(default="", max_length=4096)
    matched: str = Field(default="", max_length=1024)


class ActionResult(_Request):
    action: Literal["report", "notify", "terminate"]
    ok: bool
    detail: str = Field(default="", max_length=4096)


class AgentEvent(_Request):
    id: uuid.UUID
    type: Literal["finding_opened", "finding_resolved", "action"]
    time: AwareDatetime
    finding: FindingInfo
    result: ActionResult | None = None

    @model_validator(mode="after")
    def _complete_for_type(self) -> AgentEvent:
        if self.type == "finding_opened":
            missing = [name for name in ("app", "sensor", "verdict")
                       if getattr(self.finding, name) is None]
            if missing:
                names = ", ".join(f"finding.{name}" for name in missing)
                raise ValueError(f"a finding_opened event needs {names}")
        if self.type == "action" and self.result is None:
            raise ValueError("an action event needs `result`")
        return self


class EventBatch(_Request):
    events: list[AgentEvent]


class EventsResponse(BaseModel):
    accepted: list[str]
    duplicates: list[str]
