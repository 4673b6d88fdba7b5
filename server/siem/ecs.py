"""A record as an Elastic Common Schema (ECS) document: field names Elastic, Security
Onion and most SIEMs map without a custom parser.

Categorisation uses only ECS's allowed values (event.kind, event.category,
event.type, event.outcome). What ECS has no field for is under `warden.*`, the
custom namespace ECS asks vendors to use. Every string coming from an endpoint
has its control characters made visible (server.untrusted_text), so a path with
a bidi override or an escape sequence reads as what it is in the SIEM's UI too.
"""

from __future__ import annotations

import datetime as dt
import json
import ntpath
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from server.siem.records import SiemRecord
from server.untrusted_text import escape_controls

ECS_VERSION = "8.11.0"

# event.category and event.type per sensor, for a finding opened and resolved.
_CATEGORY = {"process": "process", "installed": "package", "network": "network"}
_TYPE_OPENED = {"process": ["start"], "installed": ["installation"],
                "network": ["connection", "start"]}
_TYPE_RESOLVED = {"process": ["end"], "installed": ["deletion"],
                  "network": ["connection", "end"]}


@dataclass(frozen=True)
class Observer:
    """The Warden server writing the record (ECS `observer.*`)."""

    hostname: str
    version: str


def ecs_document(
    record: SiemRecord, observer: Observer, value_limit: int | None = None
) -> dict[str, Any]:
    """The document; `value_limit` cuts every string to that many characters (a datagram's
    room), which keeps it valid JSON where cutting the text would not."""
    finding = record.finding
    evidence = finding.get("evidence")
    evidence = evidence if isinstance(evidence, Mapping) else {}
    sensor = str(finding.get("sensor") or "")
    doc: dict[str, Any] = {
        "@timestamp": _iso(record.time),
        "ecs": {"version": ECS_VERSION},
        "message": record.summary,
        "event": _event(record, sensor),
        "observer": {"vendor": "Warden", "product": "Warden", "type": "endpoint-policy",
                     "hostname": observer.hostname, "version": observer.version},
        "host": _drop_empty({"name": finding.get("host"), "hostname": finding.get("host"),
                             "id": finding.get("agent_id")}),
        "agent": _drop_empty({"id": finding.get("agent_id"), "type": "warden-agent",
                              "name": finding.get("host")}),
        "labels": _drop_empty({"group": finding.get("group")}),
        "warden": _warden_fields(record),
    }
    if record.kind != "sensor_problem":
        doc["rule"] = _rule(finding)
    if sensor == "process":
        doc["process"] = _process(evidence)
        doc["user"] = _drop_empty({"name": evidence.get("username")})
        doc["file"] = _file(evidence.get("exe"))
    elif sensor == "installed":
        doc["package"] = _drop_empty({
            "name": evidence.get("display_name") or evidence.get("package")
            or evidence.get("bundle_id") or evidence.get("id"),
            "version": evidence.get("version"), "path": evidence.get("path"),
            "type": evidence.get("source")})
        doc["file"] = _file(evidence.get("path"))
        doc["user"] = _drop_empty({"name": evidence.get("user")})
    elif sensor == "network":
        doc["destination"] = _drop_empty({
            "address": evidence.get("remote_host") or evidence.get("remote_ip")
            or evidence.get("remote_address"),
            "ip": evidence.get("remote_ip"), "port": evidence.get("remote_port"),
            "domain": evidence.get("remote_host")})
        doc["source"] = _drop_empty({"address": evidence.get("local_address")})
        doc["network"] = _drop_empty({"transport": evidence.get("protocol")})
        doc["process"] = _drop_empty({"pid": evidence.get("pid"),
                                      "name": evidence.get("process_name")})
    doc["related"] = _related(doc)
    visible: dict[str, Any] = _visible(_drop_empty(doc), value_limit)
    return visible


def ecs_json(record: SiemRecord, observer: Observer, value_limit: int | None = None) -> str:
    """The document as one line of JSON (UTF-8 text, no raw control characters)."""
    return json.dumps(ecs_document(record, observer, value_limit), ensure_ascii=False,
                      separators=(",", ":"), default=str)


def _event(record: SiemRecord, sensor: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": record.id,
        "kind": "alert" if "alerts" in record.streams else "event",
        "action": record.event_action,
        "outcome": record.outcome,
        "severity": record.severity,
        "created": _iso(record.time),
        "ingested": _iso(record.ingested),
        "module": "warden",
        "provider": "warden",
        "dataset": f"warden.{record.kind.split('_')[0]}",
    }
    if record.kind == "sensor_problem":
        event["category"], event["type"] = ["host"], ["info"]
        event["reason"] = record.finding.get("detail") or None
    elif record.kind == "action":
        assert record.action is not None
        ended = record.action["action"] == "terminate"
        event["category"] = ["process"] if ended else ["host"]
        event["type"] = ["end"] if ended else ["info"]
        event["reason"] = record.action.get("detail") or None
    else:
        opened = record.kind == "finding_opened"
        event["category"] = [_CATEGORY.get(sensor, "host")]
        types = (_TYPE_OPENED if opened else _TYPE_RESOLVED).get(sensor, ["info"])
        if sensor == "network" and opened and record.finding.get("verdict") in ("deny", "allow"):
            # ECS allows `denied`/`allowed` for network events: the policy's verdict.
            types = [*types, "denied" if record.finding.get("verdict") == "deny" else "allowed"]
        event["type"] = types
        event["start"] = record.finding.get("first_seen")
        if not opened:
            event["end"] = record.finding.get("resolved_at") or _iso(record.time)
    return event


def _rule(finding: Mapping[str, Any]) -> dict[str, Any]:
    app = finding.get("app")
    name = finding.get("app_name") or app
    verdict = finding.get("verdict")
    return _drop_empty({"id": app, "name": f"{verdict} {name}" if verdict else name,
                        "category": verdict, "ruleset": "warden-policy",
                        "description": finding.get("message") or None})


def _process(evidence: Mapping[str, Any]) -> dict[str, Any]:
    args = evidence.get("cmdline")
    args = [str(arg) for arg in args] if isinstance(args, list) else None
    start = evidence.get("create_time")
    return _drop_empty({
        "pid": evidence.get("pid"),
        "parent": _drop_empty({"pid": evidence.get("ppid")}),
        "name": evidence.get("name"),
        "executable": evidence.get("exe"),
        "args": args,
        "args_count": len(args) if args else None,
        "command_line": " ".join(args) if args else None,
        "start": _iso(dt.datetime.fromtimestamp(start, dt.UTC))
        if isinstance(start, int | float) and start > 0 else None,
        "hash": _drop_empty({"sha256": evidence.get("sha256")}),
    })


def _file(path: object) -> dict[str, Any]:
    if not isinstance(path, str) or not path:
        return {}
    # A Windows agent's path has backslashes; posixpath would not split it.
    module = ntpath if "\\" in path and "/" not in path else posixpath
    directory, name = module.split(path)
    extension = module.splitext(name)[1].lstrip(".")
    return _drop_empty({"path": path, "name": name, "directory": directory,
                        "extension": extension})


def _warden_fields(record: SiemRecord) -> dict[str, Any]:
    finding = record.finding
    fields: dict[str, Any] = {
        "record": record.kind,
        "finding": _drop_empty({
            name: finding.get(name) for name in (
                "id", "key", "app", "app_name", "sensor", "verdict", "action", "status",
                "triage", "alternative", "alternative_name", "confidence", "matched",
                "first_seen", "last_seen", "resolved_at", "count")}),
    }
    if record.action is not None:
        fields["action"] = dict(record.action)
    if record.kind == "sensor_problem":
        fields["sensor"] = _drop_empty({name: finding.get(name) for name in
                                        ("sensor", "state", "detail", "last_ok")})
    return fields


def _related(doc: Mapping[str, Any]) -> dict[str, Any]:
    hosts = [value for value in (doc["host"].get("name"), doc.get("destination", {})
                                 .get("domain")) if value]
    users = [value for value in (doc.get("user", {}).get("name"),) if value]
    ips = [value for value in (doc.get("destination", {}).get("ip"),) if value]
    hashes = [value for value in (doc.get("process", {}).get("hash", {}).get("sha256"),)
              if value]
    return _drop_empty({"hosts": hosts, "user": users, "ip": ips, "hash": hashes})


def _drop_empty(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items()
            if value is not None and value != {} and value != [] and value != ""}


def _visible(value: Any, limit: int | None) -> Any:
    if isinstance(value, str):
        if limit is not None and len(value) > limit:
            value = value[: max(1, limit - 1)] + "…"
        return escape_controls(value)
    if isinstance(value, dict):
        return {name: _visible(item, limit) for name, item in value.items()}
    if isinstance(value, list):
        return [_visible(item, limit) for item in value]
    return value


def _iso(time: dt.datetime | str | None) -> str | None:
    if time is None or isinstance(time, str):
        return time
    stamp = time.astimezone(dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
