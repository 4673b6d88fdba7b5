"""What the platform's own blocker (Santa, AppLocker, fapolicyd) says it blocked.

Pure parsers: a log line or an event's XML in, a `NativeBlock` (or None) out.
The input is written by a daemon but holds names a user chose (paths, command
lines), so nothing here raises on any input, and every kept text is bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

NativeBlocker = Literal["santa", "applocker", "fapolicyd"]
MAX_FIELD_CHARS = 4096  # the wire's path limit (policies.wire.ActionResult)
MAX_LINE_CHARS = 64 * 1024  # a longer line is no real block record: skipped
MAX_EVENT_CHARS = 64 * 1024
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class NativeBlock:
    """One exec the native blocker denied (`enforced`) or, in audit mode, would have."""

    blocker: NativeBlocker
    path: str
    enforced: bool
    sha256: str | None = None  # the file's own SHA-256, only when the blocker gives that
    pid: int = 0
    user: str | None = None
    parent: str | None = None
    rule: str = ""  # the blocker's reason or rule, for the action's detail
    record: str = ""  # the blocker's own id of the record, when it has one

    @property
    def name(self) -> str:
        return re.split(r"[\\/]", self.path)[-1]


def _bounded(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "")
    return text[:MAX_FIELD_CHARS] if text else None


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() and len(text) <= 10 else 0


# -- Santa ----------------------------------------------------------------------

# santad's EXEC line: "[time] I santad: action=EXEC|decision=DENY|reason=BINARY|...".
# Santa writes `|` inside a value as "<pipe>", but an old or hostile line may not:
# a fragment that does not start with a known key belongs to the value before it.
_SANTA_KEYS = frozenset({
    "action", "decision", "reason", "explain", "sha256", "cert_sha256", "cert_cn",
    "teamid", "signingid", "cdhash", "quarantine_url", "pid", "pidversion", "ppid",
    "uid", "user", "gid", "group", "mode", "path", "originalpath", "args", "machineid",
    "sid", "bundle_name", "bundle_path"})


def _santa_fields(body: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    last = ""
    for part in body.split("|"):
        key, sep, value = part.partition("=")
        if sep and key in _SANTA_KEYS and key not in fields and last != "args":
            fields[key] = value
            last = key
        elif last:
            fields[last] += "|" + part
    return fields


def parse_santa_line(line: str) -> NativeBlock | None:
    """A Santa `decision=DENY` EXEC line as a block; anything else is None."""
    if len(line) > MAX_LINE_CHARS:
        return None
    _, sep, body = line.rstrip("\r\n").partition(" santad: ")
    if not sep or not body.startswith("action=EXEC|"):
        return None
    fields = _santa_fields(body)
    if fields.get("decision") != "DENY" or not fields.get("path"):
        return None
    digest = fields.get("sha256", "").lower()
    path = fields["path"].replace("<pipe>", "|")
    return NativeBlock(
        "santa", _bounded(path) or "", enforced=True,
        sha256=digest if _SHA256.match(digest) else None, pid=_int(fields.get("pid")),
        user=_bounded(fields.get("user")), parent=_bounded(f"pid {_int(fields.get('ppid'))}"),
        rule=f"Santa {fields.get('reason', '?')[:64]} rule")


# -- AppLocker ------------------------------------------------------------------

# 8004 (EXE/DLL) and 8007 (MSI/script): prevented; 8003 and 8006: audit, would have been.
APPLOCKER_ENFORCED = {"8004": True, "8007": True, "8003": False, "8006": False}
_EVENT = re.compile(r"<Event[\s>].*?</Event>", re.DOTALL)


def split_events(xml_text: str) -> list[str]:
    """The <Event> documents `wevtutil qe /f:xml` prints one after another (no root)."""
    return [match.group(0) for match in _EVENT.finditer(xml_text)]


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def parse_applocker_event(event_xml: str) -> NativeBlock | None:
    """An AppLocker 8003/8004/8006/8007 event as a block; anything else is None."""
    # Entities are refused outright: no real event declares any, a hostile one expands.
    if len(event_xml) > MAX_EVENT_CHARS or "<!" in event_xml:
        return None
    # Here: only AppLocker's events are XML, and its parser is memory every agent would carry.
    import xml.etree.ElementTree as ElementTree

    try:
        root = ElementTree.fromstring(event_xml)
    except (ElementTree.ParseError, ValueError):
        return None
    values: dict[str, str] = {}
    for element in root.iter():
        name = _local(element.tag)
        if name not in values:
            values[name] = (element.text or "").strip()
    enforced = APPLOCKER_ENFORCED.get(values.get("EventID", ""))
    path = values.get("FullFilePath") or _expand_osdrive(values.get("FilePath", ""))
    if enforced is None or not path:
        return None
    # FileHash is AppLocker's Authenticode hash, not the file's SHA-256: kept in the detail.
    file_hash = values.get("FileHash", "")[:128]
    rule = values.get("RuleName", "")[:256]
    detail = f"AppLocker rule {rule!r}" + (f" (file hash {file_hash})" if file_hash else "")
    return NativeBlock(
        "applocker", _bounded(path) or "", enforced=enforced,
        pid=_int(values.get("TargetProcessId")), user=_bounded(values.get("TargetUser")),
        rule=detail, record=values.get("EventRecordID", "")[:20])


def _expand_osdrive(path: str) -> str:
    # Older builds give only FilePath, with the system drive as a variable.
    return re.sub(r"^%OSDRIVE%", "C:", path, flags=re.IGNORECASE)


def record_id(event_xml: str) -> int:
    """An event's EventRecordID (0 when it has none)."""
    match = re.search(r"<EventRecordID>(\d{1,19})</EventRecordID>", event_xml)
    return int(match.group(1)) if match else 0


# -- fapolicyd ------------------------------------------------------------------

# "fapolicyd[812]: rule=9 dec=deny_syslog perm=execute auid=1000 pid=5678 exe=/usr/bin/bash
#  : path=/home/bob/Telegram/Telegram ftype=application/x-executable trust=0"
_FAPOLICYD = re.compile(
    r"fapolicyd\[\d+\]: rule=(?P<rule>\d+) dec=(?P<dec>\w+) perm=(?P<perm>\w+) "
    r"(?P<subject>.*?) : (?P<object>.*)$")
_FIELD = re.compile(r"(?:^| )(\w+)=")


def _key_values(text: str) -> dict[str, str]:
    # Values may hold spaces (paths): each runs up to the next " key=".
    marks = list(_FIELD.finditer(text))
    return {mark.group(1): text[mark.end():(marks[i + 1].start() if i + 1 < len(marks)
                                            else len(text))]
            for i, mark in enumerate(marks)}


def parse_fapolicyd_line(line: str) -> NativeBlock | None:
    """A fapolicyd `dec=deny*` `perm=execute` line as a block; anything else is None."""
    if len(line) > MAX_LINE_CHARS:
        return None
    match = _FAPOLICYD.search(line.rstrip("\r\n"))
    if not match or not match["dec"].startswith("deny") or match["perm"] != "execute":
        return None
    subject, target = _key_values(match["subject"]), _key_values(match["object"])
    path = target.get("path", "")
    if not path.startswith("/"):
        return None
    return NativeBlock(
        "fapolicyd", _bounded(path) or "", enforced=True, pid=_int(subject.get("pid")),
        user=_bounded(f"auid {subject['auid']}" if subject.get("auid") else None),
        parent=_bounded(subject.get("exe")), rule=f"fapolicyd rule {match['rule']}")
