"""Matching content signatures: one linear pass over a file's bytes, whatever their number.

Every `strings` signature of every app in the bundle is compiled once into a
single RE2 `Set` (google-re2, already the policy language's matcher): RE2 runs
a DFA over the bytes, so a file costs time linear in its size, however many
signatures there are and whatever the bytes hold: no backtracking, no
per-signature pass. A 75 MB Telegram Desktop is about 150 ms of CPU (see
docs/benchmarks.md). The file is fed in chunks; the tail of each chunk is kept
so a string cut by a chunk boundary is still found.

Version resources and code signatures are not searched for: the agent parses
them (agent/sensors/executable_meta.py) and asks `match_pe` / `match_codesign`.

Pure: bytes and parsed fields in, signature references out. A reference is
``<app>/<signature id>``: what the engine (policies/engine.py) turns into a
finding whose `matched` names the signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from policies.vocabulary import OsName

# RE2's budget for the set's DFA: literal strings need a few hundred KiB.
_MAX_MEM = 64 << 20


@dataclass(frozen=True)
class _StringSignature:
    ref: str
    count: int  # how many strings must all be present


@dataclass(frozen=True)
class _MetaSignature:
    ref: str
    pe: dict[str, str] = field(default_factory=dict)
    pe_signer: str = ""
    team_id: str = ""
    signing_id: str = ""


class ContentMatcher:
    """Every content signature of a bundle's apps that applies on `os`."""

    def __init__(self, apps: Mapping[str, Mapping[str, Any]], os: OsName) -> None:
        self._strings: list[_StringSignature] = []
        # Set pattern index -> (signature index, string index).
        self._patterns: list[tuple[int, int]] = []
        self._meta: list[_MetaSignature] = []
        self.overlap = 0
        options = re2.Options()
        options.log_errors = False
        options.max_mem = _MAX_MEM
        # Bytes are bytes: a UTF-16 form holds NULs and the file is not UTF-8.
        options.encoding = re2.Options.Encoding.LATIN1
        self._set = re2.Set.SearchSet(options)
        for app_id, app in sorted(apps.items()):
            for signature in app.get("signatures", {}).get("content", []):
                if signature.get("os") and os not in signature["os"]:
                    continue
                self._add(f"{app_id}/{signature['id']}", signature)
        if self._patterns:
            self._set.Compile()

    def _add(self, ref: str, signature: Mapping[str, Any]) -> None:
        strings: list[str] = signature.get("strings", [])
        if not strings:
            self._meta.append(_MetaSignature(
                ref, dict(signature.get("pe", {})), signature.get("pe_signer", ""),
                signature.get("team_id", ""), signature.get("signing_id", "")))
            return
        index = len(self._strings)
        self._strings.append(_StringSignature(ref, len(strings)))
        for position, text in enumerate(strings):
            for form in (text.encode("utf-8"), text.encode("utf-16-le")):
                self._set.Add(re2.escape(form))
                self._patterns.append((index, position))
                self.overlap = max(self.overlap, len(form) - 1)

    @property
    def has_strings(self) -> bool:
        return bool(self._patterns)

    @property
    def has_pe(self) -> bool:
        return any(meta.pe or meta.pe_signer for meta in self._meta)

    @property
    def has_codesign(self) -> bool:
        return any(meta.team_id or meta.signing_id for meta in self._meta)

    def __bool__(self) -> bool:
        return bool(self._patterns or self._meta)

    def scan(self) -> ContentScan:
        """A new pass over one file: `feed` it chunks, then ask `matches`."""
        return ContentScan(self)

    def match_pe(self, fields: Mapping[str, str], signer: str | None) -> tuple[str, ...]:
        """Signatures whose version-resource fields (caseless) and signer all match."""
        folded = {name: value.strip().casefold() for name, value in fields.items()}
        found = []
        for meta in self._meta:
            if not (meta.pe or meta.pe_signer):
                continue
            if any(folded.get(name) != value.strip().casefold()
                   for name, value in meta.pe.items()):
                continue
            if meta.pe_signer and (signer or "").strip().casefold() != \
                    meta.pe_signer.strip().casefold():
                continue
            found.append(meta.ref)
        return tuple(found)

    def match_codesign(self, team_id: str | None, signing_id: str | None) -> tuple[str, ...]:
        """Signatures whose Team ID and signing identifier (those given) match exactly."""
        return tuple(
            meta.ref for meta in self._meta
            if (meta.team_id or meta.signing_id)
            and (not meta.team_id or meta.team_id == team_id)
            and (not meta.signing_id or meta.signing_id == signing_id))

    def _found(self, data: bytes | memoryview) -> list[int] | None:
        result: list[int] | None = self._set.Match(data)
        return result


class ContentScan:
    """One file's pass: chunks in order, the matched signature references out."""

    def __init__(self, matcher: ContentMatcher) -> None:
        self._matcher = matcher
        self._seen: list[set[int]] = [set() for _ in matcher._strings]
        self._tail = b""

    def feed(self, chunk: bytes | memoryview) -> None:
        """The next bytes of the file; `chunk` is searched where it is, never copied whole
        (the reader hands in a view of its buffer, and reuses the buffer afterwards)."""
        if not self._matcher.has_strings or not chunk:
            return
        overlap = self._matcher.overlap
        if self._tail:
            # A string cut by the boundary starts in the tail and is at most `overlap` + 1
            # long, so it ends within the chunk's first `overlap` bytes.
            self._mark(self._tail + bytes(chunk[:overlap]))
        self._mark(chunk)
        if len(chunk) >= overlap:
            self._tail = bytes(chunk[len(chunk) - overlap:]) if overlap else b""
        else:
            self._tail = (self._tail + bytes(chunk))[-overlap:]

    def _mark(self, data: bytes | memoryview) -> None:
        for pattern in self._matcher._found(data) or ():
            signature, position = self._matcher._patterns[pattern]
            self._seen[signature].add(position)

    def gap(self) -> None:
        """The next chunk does not follow the last one in the file."""
        self._tail = b""

    def matches(self) -> tuple[str, ...]:
        return tuple(signature.ref for signature, seen in zip(
            self._matcher._strings, self._seen, strict=True) if len(seen) == signature.count)


def match_bytes(matcher: ContentMatcher, data: bytes) -> tuple[str, ...]:
    """The signatures whose strings all appear in `data` (one chunk)."""
    scan = matcher.scan()
    scan.feed(data)
    return scan.matches()
