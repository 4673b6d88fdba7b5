"""Globs, path placeholders, CIDRs and ports: checked once, compiled once.

Path globs are OS-neutral on purpose: one bundle serves every OS, so `~` and
the Windows folder placeholders expand to patterns that match *any* user's
folder rather than the folders of whoever runs the agent.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

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


_STANDARD_HOME = re.compile(_HOME + r"\Z")


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
        if not path or _STANDARD_HOME.match(path):
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
    try:
        glob_to_regex(pattern)
    except re.error as exc:
        raise ValueError(f"bad glob {pattern!r}: {exc}; check its brackets") from exc
    return pattern


def check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"bad regular expression {pattern!r}: {exc}; fix it, or escape special characters "
            "with a backslash"
        ) from exc
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


@lru_cache(maxsize=4096)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path or name glob: `*` within a segment, `**` across, `?` one char.

    Windows-looking patterns (placeholders, drive letters, backslashes) compile
    case-insensitively; the rest match exactly.
    """
    windows = bool(_PLACEHOLDER_RE.search(pattern)) or "\\" in pattern or (
        len(pattern) > 1 and pattern[1] == ":"
    )
    text = pattern.replace("\\", "/")
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
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
        i += 1
    flags = re.IGNORECASE if windows else 0
    return re.compile("".join(out) + r"\Z", flags)


def glob_is_literal(pattern: str) -> bool:
    return not any(char in pattern for char in "*?[~%")
