"""Globs, path placeholders, CIDRs and ports: checked once, compiled once.

Path globs are OS-neutral on purpose: one bundle serves every OS, so `~` and
the Windows folder placeholders expand to patterns that match *any* user's
folder rather than the folders of whoever runs the agent. Globs compile to RE2
(`policies.matching`), so matching one costs time linear in the path whatever
its wildcards (`*a*a*a*a*b` backtracks cubically in Python's `re`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache

from policies.matching import MAX_PATTERN_CHARS, Pattern, compile_regex

# Each placeholder stands for every user's folder on the OS it belongs to.
# Paths are normalised before matching (see normalise_path), so these are written
# with forward slashes and lower case for the Windows ones.
# `~`: Linux (/home, /root, Fedora Silverblue /var/home), macOS (/Users) and Windows homes.
_HOME = r"(?:/home/[^/]+|/root|/var/home/[^/]+|/Users/[^/]+|[a-z]:/users/[^/]+)"
PLACEHOLDERS: dict[str, str] = {
    "%appdata%": r"[a-z]:/users/[^/]+/appdata/roaming",
    "%localappdata%": r"[a-z]:/users/[^/]+/appdata/local",
    "%programfiles%": r"[a-z]:/program files(?: \(x86\))?",
}
_PLACEHOLDER_RE = re.compile(r"%[A-Za-z]+%")


def normalise_path(path: str) -> str:
    """Forward slashes; lower case when the path is a Windows one (case-insensitive FS)."""
    if "\\" in path or (len(path) > 1 and path[1] == ":"):
        return path.replace("\\", "/").lower()
    return path




def home_aliases(homes: tuple[str, ...]) -> list[tuple[str, str]]:
    """(home, the same user's home where `~` looks) for each home that `~` misses.

    `~` compiles to a fixed set of parents so one bundle serves every machine;
    a machine whose homes live elsewhere (/srv/people/alice, D:/Profiles/bob)
    maps them onto that set before matching. Longest first, so a home inside
    another home is the one that applies.
    """
    aliases = []
    for home in homes:
        path = normalise_path(home).rstrip("/")
        if not path or compile_regex(_HOME).fullmatch(path):
            continue
        windows = len(path) > 1 and path[1] == ":"
        name = path.rsplit("/", 1)[-1]
        aliases.append((path, f"c:/users/{name}" if windows else f"/home/{name}"))
    return sorted(aliases, key=lambda alias: -len(alias[0]))


def check_glob(pattern: str) -> str:
    """Reject globs that cannot be compiled or name unknown placeholders."""
    if not pattern.strip():
        raise ValueError("an empty glob matches nothing; remove it")
    for name in _PLACEHOLDER_RE.findall(pattern):
        if name.lower() not in PLACEHOLDERS:
            known = ", ".join(sorted(p.upper() for p in PLACEHOLDERS))
            raise ValueError(f"unknown placeholder {name} in glob {pattern!r}; use one of {known}")
    if pattern.count("[") != pattern.count("]"):
        raise ValueError(f"unbalanced '[' in glob {pattern!r}; escape it as [[]")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValueError(f"glob is {len(pattern)} characters long, more than "
                         f"{MAX_PATTERN_CHARS}; shorten it")
    try:
        compile_glob(pattern)
    except ValueError as exc:
        detail = str(exc).split("; ", 1)[0]
        raise ValueError(f"bad glob {pattern!r} ({detail}); check its brackets") from None
    return pattern


def check_regex(pattern: str) -> str:
    compile_regex(pattern)
    return pattern


def check_network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise ValueError(
            f"{value!r} is not a CIDR network ({exc}); write it like 149.154.160.0/20 "
            "or 2001:b28:f23d::/48 with no host bits set"
        ) from exc


def check_port(value: int) -> int:
    if not 1 <= value <= 65535:
        raise ValueError(f"port {value} is out of range; use 1-65535")
    return value


@dataclass(frozen=True)
class Glob:
    """A compiled glob. `literal` is text every match contains: most paths lack it, and
    `in` rules them out for a fraction of what a call into RE2 costs."""

    regex: Pattern
    literal: str
    caseless: bool

    def fullmatch(self, text: str) -> bool:
        return self.matches(text, text.casefold() if self.caseless else text)

    def matches(self, text: str, folded: str) -> bool:
        """Whether the glob matches `text`; `folded` is `text.casefold()` (needed only for a
        caseless glob: a caller asking many globs about one text folds it once).

        casefold() maps every character RE2 folds onto an ASCII letter (the long s, the
        Kelvin sign) to that letter, so the ASCII literal test never says no to a text
        RE2 would match."""
        return (self.literal in (folded if self.caseless else text)
                and self.regex.fullmatch(text))


@lru_cache(maxsize=4096)
def compile_glob(pattern: str, caseless: bool = False) -> Glob:
    """Compile a path or name glob, matched whole: `*` within a segment, `**` across,
    `?` one char.

    Windows-looking patterns (placeholders, drive letters, backslashes) compile
    case-insensitively, as does any when `caseless`; the rest match exactly.
    """
    caseless = caseless or bool(_PLACEHOLDER_RE.search(pattern)) or "\\" in pattern or (
        len(pattern) > 1 and pattern[1] == ":"
    )
    text = pattern.replace("\\", "/")
    out: list[str] = []
    runs: list[str] = [""]
    i = 0
    while i < len(text):
        char = text[i]
        runs.append("")  # anything but a plain character below ends the literal run
        if char == "%":
            match = _PLACEHOLDER_RE.match(text, i)
            if match:
                out.append(PLACEHOLDERS[match.group(0).lower()])
                i = match.end()
                continue
        if char == "~" and i == 0:
            out.append(_HOME)
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        elif char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = text.index("]", i + 1)
            out.append("[" + text[i + 1 : end].replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
            runs.pop()
            runs[-1] += char
        i += 1
    ascii_runs = [part for run in runs for part in re.split(r"[^\x00-\x7f]", run)]
    literal = max(ascii_runs, key=len)
    return Glob(compile_regex("".join(out), caseless=caseless),
                literal.casefold() if caseless else literal, caseless)


def glob_is_literal(pattern: str) -> bool:
    return not any(char in pattern for char in "*?[~%")
