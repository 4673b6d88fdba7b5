"""A finding's evidence on the wire, per sensor: what the engine builds and the server takes.

The engine turns each observation into evidence (`policies.engine`); an agent
sends it with every finding; the server validates it at ingest with the models
below, so nothing else reaches its database, its pages or its alerts. Both
sides import this module, so a field means the same thing on each.

Types are checked strictly: a pid is an int, an exe a string; a wrong type
refuses the batch (422 naming the field). Sizes are capped, never refused:
text longer than its cap is cut (ending in `…`), and a list keeps its first
items. Lengths are chosen by whoever names a file or a process on the
endpoint, and a refused batch stays in the agent's spool, so refusing an odd
length would let any local user stop that agent's reports.

Every field is optional (an agent may not see everything: a denied exe, an
unknown owner). Keys outside the models are dropped, as elsewhere in the agent
API, so a newer agent can still talk to an older server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from policies.matching import command_line_window
from policies.mobile_index import mobile_evidence
from policies.observations import (
    InstalledObservation,
    MobileAppObservation,
    Observation,
    ProcessObservation,
)
from policies.vocabulary import Sensor

# How much text one field keeps: paths get more room than names and ids.
TEXT_CHARS = 1024
PATH_CHARS = 4096
# How many items a list keeps: command-line arguments, a folder's file names.
LIST_ITEMS = 128
CUT_MARK = "…"



def cap_text(limit: int) -> Callable[[str], str]:
    def cut(value: str) -> str:
        return value if len(value) <= limit else value[: limit - len(CUT_MARK)] + CUT_MARK

    return cut


def _keep_first(limit: int) -> Callable[[Any], Any]:
    # Before validation: a list of a million items is cut, not checked item by item.
    def head(value: Any) -> Any:
        return value[:limit] if isinstance(value, list) else value

    return head


Text = Annotated[str, AfterValidator(cap_text(TEXT_CHARS))]
PathText = Annotated[str, AfterValidator(cap_text(PATH_CHARS))]
TextList = Annotated[list[PathText], BeforeValidator(_keep_first(LIST_ITEMS))]
def _whole_number(value: Any) -> Any:
    # JSON counts 469.0 as the integer 469 (and so does the API's document, "integer"):
    # taken as 469. A fraction, a numeric string or a bool is still refused.
    return int(value) if isinstance(value, float) and value.is_integer() else value


# The bounds before the validator, so the document says `minimum` and `maximum`.
Pid = Annotated[int, Field(ge=0, le=2**32 - 1), BeforeValidator(_whole_number)]
Port = Annotated[int, Field(ge=0, le=65_535), BeforeValidator(_whole_number)]
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]


class _Evidence(BaseModel):
    # strict: "123" is not a pid and 123 is not a path. Frozen: a value to pass around.
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    def wire(self) -> dict[str, Any]:
        """The evidence as JSON-ready data: the fields that were sent, as validated."""
        return self.model_dump(mode="json", exclude_unset=True)


class ProcessEvidence(_Evidence):
    pid: Pid | None = None
    ppid: Pid | None = None
    create_time: Seconds | None = None
    name: Text | None = None
    exe: PathText | None = None
    cmdline: TextList | None = None
    username: Text | None = None
    sha256: Sha256 | None = None
    # Content signatures the executable matched, "<app>/<signature id>" (policies.content_match).
    content_signatures: TextList | None = None


class InstalledEvidence(_Evidence):
    # Not a Literal of today's sources: a newer agent's new source must not be refused.
    source: Text | None = None
    # Package name, snap or flatpak id, .desktop name, bundle id, uninstall key, folder path.
    id: PathText | None = None
    package: Text | None = None
    bundle_id: Text | None = None
    path: PathText | None = None
    version: Text | None = None
    user: Text | None = None
    display_name: Text | None = None
    publisher: Text | None = None
    team_id: Text | None = None
    contents: TextList | None = None
    content_signatures: TextList | None = None


class NetworkEvidence(_Evidence):
    remote_address: Text | None = None
    remote_ip: Text | None = None
    remote_port: Port | None = None
    remote_host: Text | None = None
    host_from_dns: bool | None = None
    local_address: Text | None = None
    protocol: Text | None = None
    pid: Pid | None = None
    process_name: Text | None = None


class MobileEvidence(_Evidence):
    """An app an MDM lists on a phone (server.connectors; never sent by an agent)."""

    connector: Text | None = None
    device_id: Text | None = None
    platform: Text | None = None
    bundle_id: Text | None = None
    package: Text | None = None
    display_name: Text | None = None
    publisher: Text | None = None
    version: Text | None = None


class AnySensorEvidence(ProcessEvidence, InstalledEvidence, NetworkEvidence, MobileEvidence):
    """Evidence of an event that names no sensor (a resolve, an action): every known field,
    each with its own type. Where two sensors share a name (`pid`), they share its type."""


EVIDENCE_MODELS: dict[Sensor | None, type[_Evidence]] = {
    "process": ProcessEvidence,
    "installed": InstalledEvidence,
    "network": NetworkEvidence,
    "mdm": MobileEvidence,
    None: AnySensorEvidence,
}


def validate_evidence(sensor: Sensor | None, evidence: Any) -> dict[str, Any]:
    """`evidence` checked against `sensor`'s model and capped; raises pydantic's
    ValidationError with each problem's location inside the evidence.

    A field any sensor's model names has that type whatever the sensor (`sha256` is a
    digest in an installed finding too, though only a process finding keeps it): the
    agent API documents one evidence object (`EVIDENCE_SCHEMA`), and what it documents
    as valid is taken. So one validation, with every sensor's fields, then the fields of
    `sensor`'s model kept (a name two models share has one type in both)."""
    checked = AnySensorEvidence.model_validate(evidence).wire()
    if sensor is None:
        return checked
    kept = _FIELDS[sensor]
    return {name: value for name, value in checked.items() if name in kept}


_FIELDS = {sensor: frozenset(model.model_fields) for sensor, model in EVIDENCE_MODELS.items()}

# The evidence object as the agent API's document describes it: every known field typed,
# any other key allowed (and dropped).
EVIDENCE_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": True,
    "properties": AnySensorEvidence.model_json_schema()["properties"],
}


def evidence_of(observation: Observation) -> dict[str, Any]:
    """What the engine reports about one observation: the sensor's evidence fields."""
    if isinstance(observation, ProcessObservation):
        return {
            "pid": observation.pid,
            "create_time": observation.create_time,
            "name": observation.name,
            "exe": observation.exe,
            # What the signatures saw: the server re-evaluates this, and a huge command
            # line would cost every page and preview that reads the finding.
            "cmdline": command_line_window(observation.cmdline),
            "username": observation.username,
            **({"sha256": observation.sha256} if observation.sha256 else {}),
            **({"content_signatures": list(observation.content)} if observation.content
               else {}),
        }
    if isinstance(observation, InstalledObservation):
        evidence: dict[str, Any] = {"source": observation.source, "id": observation.id,
                                    "path": observation.path, "version": observation.version,
                                    "user": observation.user}
        if observation.source == "deb" or observation.source == "rpm":
            evidence["package"] = observation.id
        if observation.source == "app_bundle":
            evidence["bundle_id"] = observation.id
        for name in ("display_name", "publisher", "team_id"):
            if getattr(observation, name):
                evidence[name] = getattr(observation, name)
        if observation.content:
            evidence["content_signatures"] = list(observation.content)
        return evidence
    if isinstance(observation, MobileAppObservation):
        return mobile_evidence(observation)
    return {
        "remote_address": f"{observation.remote_ip}:{observation.remote_port}",
        "remote_ip": observation.remote_ip,
        "remote_port": observation.remote_port,
        "remote_host": observation.remote_host,
        **({"host_from_dns": True} if observation.host_from_dns else {}),
        "local_address": f"{observation.local_ip}:{observation.local_port}",
        "protocol": observation.protocol,
        "pid": observation.pid,
        "process_name": observation.process_name,
    }
