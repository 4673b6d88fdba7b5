"""A record as ArcSight Common Event Format (CEF:0), the line QRadar, ArcSight, Sentinel
and most SIEMs parse out of a syslog message without a custom parser.

`CEF:Version|Device Vendor|Device Product|Device Version|Signature ID|Name|Severity|Extension`

Escaping follows the CEF specification: in the header, `\\` and `|` are escaped
with a backslash and a line break cannot occur; in extension values `\\` and `=`
are escaped and a line break is written `\\n` (or `\\r`). Any other control
character, and the bidi overrides of "Trojan Source", become the visible
`\\u001b` form of server.untrusted_text, with its backslash escaped, so a CEF
parser shows the six characters and nothing acts on them.
"""

from __future__ import annotations

import datetime as dt
import ntpath
import posixpath
from collections.abc import Mapping
from typing import Any

from server.siem.records import SiemRecord
from server.untrusted_text import replace_controls

VENDOR = "Warden"
PRODUCT = "Warden"
# CEF caps a few keys; longer values are cut (with "…") so a strict parser keeps the event.
_LIMITS = {"msg": 1023, "reason": 1023, "filePath": 1023, "fname": 1023, "sproc": 1023,
           "shost": 1023, "dhost": 1023, "suser": 1023, "request": 1023}
_CUSTOM_STRING_LIMIT = 4000
# The signature id names the kind of event, as CEF's "Device Event Class ID" is meant to.
_SIGNATURES = {"finding_opened": "finding-opened", "finding_resolved": "finding-resolved",
               "sensor_problem": "sensor-problem"}


def cef_line(record: SiemRecord, version: str, value_limit: int | None = None) -> str:
    """The CEF line; `value_limit` cuts every extension value further (a datagram's room)."""
    signature = (f"action-{record.event_action}" if record.kind == "action"
                 else _SIGNATURES[record.kind])
    name = record.summary[:512]
    header = "|".join(["CEF:0", *(_header(part) for part in (
        VENDOR, PRODUCT, version, signature, name, str(max(0, min(10, record.severity)))))])
    pairs = [f"{key}={_extension_value(value, key, value_limit)}"
             for key, value in extension(record).items()]
    return f"{header}|{' '.join(pairs)}"


def extension(record: SiemRecord) -> dict[str, str]:
    """CEF extension keys from the CEF dictionary; Warden's own fields in cs1..cs6."""
    finding = record.finding
    evidence = finding.get("evidence")
    evidence = evidence if isinstance(evidence, Mapping) else {}
    sensor = str(finding.get("sensor") or "")
    fields: dict[str, Any] = {
        "rt": int(record.time.astimezone(dt.UTC).timestamp() * 1000),
        "externalId": record.id,
        "cat": f"warden/{record.kind}",
        "msg": record.summary,
        "shost": finding.get("host"),
        "deviceExternalId": finding.get("agent_id"),
        "outcome": record.outcome,
        "act": record.event_action if record.action is not None else finding.get("action"),
        "reason": (record.action or {}).get("detail") or finding.get("detail"),
        "cnt": finding.get("count"),
    }
    if sensor == "process":
        fields |= {"sproc": evidence.get("name"), "spid": evidence.get("pid"),
                   "suser": evidence.get("username"), "fileHash": evidence.get("sha256")}
        fields |= _file(evidence.get("exe"))
    elif sensor == "installed":
        fields |= {"suser": evidence.get("user")}
        fields |= _file(evidence.get("path"))
    elif sensor == "network":
        fields |= {"dst": evidence.get("remote_ip"), "dpt": evidence.get("remote_port"),
                   "dhost": evidence.get("remote_host"), "proto": evidence.get("protocol"),
                   "sproc": evidence.get("process_name"), "spid": evidence.get("pid")}
    command = evidence.get("cmdline")
    custom = [
        ("app", finding.get("app")),
        ("verdict", finding.get("verdict")),
        ("sensor", finding.get("sensor")),
        ("findingId", finding.get("id")),
        ("alternative", finding.get("alternative")),
        ("commandLine", " ".join(str(arg) for arg in command)
         if isinstance(command, list) and command else None),
    ]
    for number, (label, value) in enumerate(custom, start=1):
        if value not in (None, ""):
            fields[f"cs{number}"] = value
            fields[f"cs{number}Label"] = label
    return {key: str(value) for key, value in fields.items() if value not in (None, "")}


def _file(path: object) -> dict[str, Any]:
    if not isinstance(path, str) or not path:
        return {}
    module = ntpath if "\\" in path and "/" not in path else posixpath
    return {"filePath": path, "fname": module.basename(path)}


def _header(value: str) -> str:
    # A header is one line: whitespace runs become one space before anything is escaped.
    text = " ".join(value.split()).replace("\\", "\\\\").replace("|", "\\|")
    return replace_controls(text, _visible_control)


def _extension_value(value: str, key: str, value_limit: int | None) -> str:
    limit = _LIMITS.get(key, _CUSTOM_STRING_LIMIT if key.startswith("cs") else None)
    if value_limit is not None:
        limit = min(limit or value_limit, value_limit)
    if limit is not None and len(value) > limit:
        value = value[: limit - 1] + "…"
    text = value.replace("\\", "\\\\").replace("=", "\\=")
    return replace_controls(text.replace("\r\n", "\n"), _extension_control)


def _extension_control(char: str) -> str:
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    return _visible_control(char)


def _visible_control(char: str) -> str:
    # server.untrusted_text's `\u001b`, its backslash escaped for CEF.
    return f"\\\\u{ord(char):04x}"
