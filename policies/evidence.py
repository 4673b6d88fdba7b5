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
Pid = Annotated[int, Field(ge=0, le=2**32 - 1)]
Port = Annotated[int, Field(ge=0, le=65_535)]
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


class AnySensorEvidence(ProcessEvidence, InstalledEvidence, NetworkEvidence):
    """Evidence of an event that names no sensor (a resolve, an action): every known field,
    each with its own type. Where two sensors share a name (`pid`), they share its type."""


EVIDENCE_MODELS: dict[Sensor | None, type[_Evidence]] = {
    "process": ProcessEvidence,
    "installed": InstalledEvidence,
    "network": NetworkEvidence,
    None: AnySensorEvidence,
}


def validate_evidence(sensor: Sensor | None, evidence: Any) -> dict[str, Any]:
    """`evidence` checked against `sensor`'s model and capped; raises pydantic's
    ValidationError with each problem's location inside the evidence."""
    return EVIDENCE_MODELS[sensor].model_validate(evidence).wire()
