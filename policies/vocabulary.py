"""The words Warden's parts share, each defined once.

An OS, a sensor, a verdict, an action, a mode, a role: the policy file, the
engine, the agent, the wire format, the store, the API and the CLI all speak of
them, so each is one `Literal` here and every other module imports it. The
tuples beside them are the same values for code that needs to iterate (argparse
choices, SQL CHECKs, role ranking); they are derived, never typed twice.
"""

from __future__ import annotations

from typing import Literal, get_args

OsName = Literal["linux", "macos", "windows"]
OS_NAMES: tuple[OsName, ...] = get_args(OsName)
# Phones and tablets: no agent runs there; their MDM reports them (server.connectors).
MobileOsName = Literal["ios", "ipados", "android"]
MOBILE_OS_NAMES: tuple[MobileOsName, ...] = get_args(MobileOsName)
# What a host's `os` may be: a machine with an agent, or a device an MDM reports.
HostOsName = Literal["linux", "macos", "windows", "ios", "ipados", "android"]
HOST_OS_NAMES: tuple[HostOsName, ...] = get_args(HostOsName)

# Where a finding comes from: an agent's sensors on an endpoint, or (`mdm`) the app
# inventory an MDM reports for a phone or tablet (only the server's connectors say `mdm`).
EndpointSensor = Literal["process", "installed", "network"]
ENDPOINT_SENSORS: tuple[EndpointSensor, ...] = get_args(EndpointSensor)
Sensor = Literal[EndpointSensor, "mdm"]
SENSORS: tuple[Sensor, ...] = get_args(Sensor)

# What a policy says about an app, and what to do when it is seen.
Verdict = Literal["deny", "allow", "alert"]
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
# `block`: on Linux the exec of a denied file fails (fanotify); what still runs is terminated.
Action = Literal["report", "notify", "terminate", "block"]
ACTIONS: tuple[Action, ...] = get_args(Action)
Mode = Literal["audit", "enforce"]
MODES: tuple[Mode, ...] = get_args(Mode)

# How sure a match is: a catalog network or exact name is high; a DNS-derived address medium.
Confidence = Literal["high", "medium"]
Protocol = Literal["tcp", "udp"]

# What a finding says of its app: the rule's verdict, or `excepted` while a signed,
# unexpired exception (policies.exceptions) lets this machine run the app.
FindingVerdict = Literal["deny", "allow", "alert", "excepted"]
FINDING_VERDICTS: tuple[FindingVerdict, ...] = get_args(FindingVerdict)

# What an agent reports: about one finding, or a person's request for an exception.
EventType = Literal["finding_opened", "finding_resolved", "action", "exception_requested"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
FindingStatus = Literal["open", "resolved"]
FINDING_STATUSES: tuple[FindingStatus, ...] = get_args(FindingStatus)
# What became of one action on an endpoint: done, failed (the detail says why), or only
# what it would have done (audit mode: the policy asks for it, the mode holds it back).
OutcomeState = Literal["done", "failed", "would_have"]
OUTCOME_STATES: tuple[OutcomeState, ...] = get_args(OutcomeState)
TriageState = Literal["new", "acknowledged", "resolved", "false_positive", "excepted"]
TRIAGE_STATES: tuple[TriageState, ...] = get_args(TriageState)

# People's roles, weakest first: each role can do what the ones before it can.
Role = Literal["viewer", "analyst", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)

# An exception as the API lists it, and a request for one from a machine.
ExceptionState = Literal["active", "expired", "revoked"]
EXCEPTION_STATES: tuple[ExceptionState, ...] = get_args(ExceptionState)
RequestStatus = Literal["pending", "approved", "denied"]
REQUEST_STATUSES: tuple[RequestStatus, ...] = get_args(RequestStatus)

# A host as the fleet view sees it.
AgentState = Literal["active", "silent", "revoked"]
AGENT_STATES: tuple[AgentState, ...] = get_args(AgentState)


def role_allows(held: Role, needed: Role) -> bool:
    """Whether a caller with role `held` may do what needs `needed`."""
    return ROLES.index(held) >= ROLES.index(needed)


# The MDMs the server reads device inventory from (server.connectors).
ConnectorKind = Literal["intune", "jamf", "android"]
CONNECTOR_KINDS: tuple[ConnectorKind, ...] = get_args(ConnectorKind)
# How a connector's last sync ended: `ok` (complete: findings updated), `failed` (nothing
# changed; `last_error` says why).
SyncOutcome = Literal["ok", "failed"]
