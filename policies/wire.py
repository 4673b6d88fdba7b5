"""The agent API's wire format: request and response bodies (docs/api.md, "Agent API").

Both sides use these models: the agent builds what it sends with them and reads
the server's answers through them; the server validates what arrives with the
same classes and documents them in /openapi.json. Requests ignore unknown keys
so a newer agent can talk to an older server; every field that reaches the
database has a length bound, so one request cannot bloat a row beyond the
body-size cap.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from policies.catalog_model import APP_ID_PATTERN
from policies.evidence import EVIDENCE_SCHEMA, validate_evidence
from policies.exceptions import ExceptionRequestInfo, SignedExceptions
from policies.observations import MAX_KEY_CHARS, SensorState
from policies.vocabulary import (
    ENDPOINT_SENSORS,
    FINDING_VERDICTS,
    Action,
    EndpointSensor,
    EventType,
    FindingVerdict,
    Mode,
    OsName,
)

_Short = Field(min_length=1, max_length=255)
_AppId = Field(default=None, max_length=64, pattern=APP_ID_PATTERN)
# A raw 32-byte Ed25519 public key in base64 (agent/host/machine.py).
_PUBLIC_KEY = r"^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EnrollProof(_Request):
    signed_at: str = Field(min_length=1, max_length=64,
                           description="ISO 8601 with a zone, exactly as signed")
    signature: str = Field(pattern=r"^[A-Za-z0-9+/]{85}[AQgw]==$",
                           description="Ed25519 by `public_key` over the canonical JSON of "
                                       '{"purpose": "warden.agent-enrollment", "machine_id", '
                                       '"public_key", "signed_at"}, base64')


class EnrollRequest(_Request):
    hostname: str = _Short
    machine_id: str = _Short
    os: OsName
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


def _json_time_or_null(value: Any) -> Any:
    return value if value is None else _json_string(value)


class SensorReport(_Request):
    """How one sensor's scans go (agent.scanning.sensor_health)."""

    state: SensorState = Field(description="`ok`; `stalled`: a scan runs past its deadline; "
                                           "`error`: the last scan raised; `fallback`: "
                                           "it cannot run here and a slower sensor covers")
    last_ok: Annotated[AwareDatetime | None, BeforeValidator(_json_time_or_null)] = Field(
        default=None,
                                          description="when a scan last returned; null: never")
    detail: str = Field(default="", max_length=1024, description="why, when not `ok`")


# A sensor's name: a newer agent may have sensors this server does not know yet.
_SENSOR_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


def _known_form(sensors: Any) -> Any:
    # A name that is not a short lower-case id is dropped, not refused: it comes from a
    # newer agent or a broken one, and the rest of the check-in still counts.
    if not isinstance(sensors, dict):
        return sensors
    return {name: report for name, report in sensors.items()
            if isinstance(name, str) and _SENSOR_NAME.fullmatch(name)}


def _json_number(value: Any) -> Any:
    # What the schema says: a JSON number (2.0 is an integer too), never `true` or "12",
    # which pydantic would otherwise take.
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError("must be a number")
    return value


_Number = BeforeValidator(_json_number)


def _json_string(value: Any) -> Any:
    # A time is RFC 3339 text, as the schema says; pydantic would also take a Unix number.
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 time as a string")
    return value


class AgentStatus(_Request):
    spool_depth: Annotated[int | None, _Number] = Field(default=None, ge=0)
    dropped_events: Annotated[int | None, _Number] = Field(default=None, ge=0)
    open_findings: Annotated[int | None, _Number] = Field(default=None, ge=0)
    cpu_percent: Annotated[float | None, _Number] = Field(default=None, ge=0)
    rss_bytes: Annotated[int | None, _Number] = Field(default=None, ge=0)
    uptime_seconds: Annotated[float | None, _Number] = Field(default=None, ge=0)
    # Set while the agent refuses the policy it was offered (bad signature, malformed).
    policy_error: str | None = Field(default=None, max_length=1024)
    # The signing key the agent trusts now (base64): who has moved after a key rotation.
    policy_public_key: str | None = Field(default=None, max_length=64)
    # Per sensor; an agent older than this field sends none.
    sensors: Annotated[dict[str, SensorReport] | None, AfterValidator(_known_form)] = Field(
        default=None, max_length=16)


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
    exceptions: SignedExceptions | None = Field(
        default=None, description="the exceptions this agent may honour and the answers to "
                                  "its requests, signed (policies.exceptions); the agent "
                                  "takes them only if they verify with its policy key")
    policy_number: int | None = Field(
        default=None, description="the active version's number (v2), for people: the agent "
                                  "shows it in `warden-agent status`")


MESSAGE_CHARS = 4096
MATCHED_CHARS = 1024


class FindingInfo(_Request):
    key: str = Field(min_length=1, max_length=MAX_KEY_CHARS)
    # An app id's form only: which ids the server knows is for metrics and stats to decide
    # (server.store.known_apps), so an agent on a newer catalog is never refused.
    app: str | None = _AppId
    # An agent reports what its sensors saw; `mdm` findings come from connectors only.
    sensor: EndpointSensor | None = None
    verdict: FindingVerdict | None = None
    action: Action | None = None
    # Checked against the sensor's model (policies.evidence): after `sensor`, which it needs.
    evidence: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra=EVIDENCE_SCHEMA,
        description="what the sensor saw; the fields of policies.evidence for `sensor`, "
                    "typed; long text is cut, other keys are dropped")
    alternative: str | None = _AppId
    confidence: str | None = Field(default=None, max_length=16)
    message: str = Field(default="", max_length=MESSAGE_CHARS)
    matched: str = Field(default="", max_length=MATCHED_CHARS)

    @field_validator("evidence")
    @classmethod
    def _evidence_of_sensor(cls, evidence: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # A bad `sensor` is reported on its own; the evidence is then checked as any sensor's.
        return validate_evidence(info.data.get("sensor"), evidence)


ACTION_DETAIL_CHARS = 4096


class ActionResult(_Request):
    action: Action
    ok: bool = Field(strict=True)
    detail: str = Field(default="", max_length=ACTION_DETAIL_CHARS)
    # A `block`: the file whose exec was denied, its SHA-256, who ran it and from what.
    path: str | None = Field(default=None, max_length=4096)
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    user: str | None = Field(default=None, max_length=1024)
    parent: str | None = Field(default=None, max_length=4096)
    mode: Mode | None = Field(
        default=None, description="the policy's mode when it ran: in `audit` a result that "
                                  "is not ok is what enforce mode would have done")


# What `_complete_for_type` checks, said in the JSON schema too, so a client generated
# from /openapi.json (or a fuzzer) knows which fields each event type needs.
_NEEDS_BY_TYPE: JsonDict = {"allOf": [
    {"if": {"properties": {"type": {"const": "finding_opened"}}},
     "then": {"properties": {"finding": {
         "required": ["app", "sensor", "verdict"],
         "properties": {"app": {"type": "string"},
                        "sensor": {"enum": list(ENDPOINT_SENSORS)},
                        "verdict": {"enum": list(FINDING_VERDICTS)}}}}}},
    {"if": {"properties": {"type": {"const": "action"}}},
     "then": {"required": ["result"], "properties": {"result": {"type": "object"}}}},
    {"if": {"properties": {"type": {"const": "exception_requested"}}},
     "then": {"required": ["request"], "properties": {"request": {"type": "object"}}},
     "else": {"required": ["finding"], "properties": {"finding": {"type": "object"}}}},
]}


class AgentEvent(_Request):
    model_config = ConfigDict(extra="ignore", json_schema_extra=_NEEDS_BY_TYPE)

    id: uuid.UUID
    type: EventType
    time: Annotated[AwareDatetime, BeforeValidator(_json_string)]
    # Every type but `exception_requested`, which carries `request` instead.
    finding: FindingInfo | None = None
    result: ActionResult | None = None
    request: ExceptionRequestInfo | None = None
    restated: bool = Field(
        default=False, strict=True,
        description="a finding_opened that restates one still open on new terms (a policy "
                    "activated or rolled back): an update, not a new sighting to count")

    @model_validator(mode="after")
    def _complete_for_type(self) -> AgentEvent:
        if self.type == "exception_requested":
            if self.request is None:
                raise ValueError("an exception_requested event needs `request`")
            return self
        if self.finding is None:
            raise ValueError(f"a {self.type} event needs `finding`")
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
