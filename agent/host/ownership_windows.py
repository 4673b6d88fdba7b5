"""Who may change a file on Windows: its owner SID and DACL, read as SDDL, and judged.

`judge_sddl` is the decision, pure: a security descriptor in SDDL (as
`Get-Acl F | % Sddl` or `icacls` would show it) in, the problem or None out.
`WindowsSecurity` is the thin interface that reads a path's SDDL and the
process's own SID through advapi32 (GetNamedSecurityInfoW, then
ConvertSecurityDescriptorToStringSecurityDescriptorW); off Windows, tests give
it stand-in DLLs. agent/host/ownership.py decides when to ask.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

# What a path is to the agent: the file or directory it reads or writes, a directory
# it passes through on the way there, or a link it follows (only its owner matters).
Role = Literal["file", "directory", "parent", "link"]

SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"
TRUSTED_INSTALLER = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
OWNER_RIGHTS = "S-1-3-4"
ADMIN_SIDS = frozenset({SYSTEM, ADMINISTRATORS, TRUSTED_INSTALLER})

# SDDL's two-letter names for the well-known SIDs found on file systems.
_SID_ALIASES = {
    "SY": SYSTEM, "BA": ADMINISTRATORS, "BU": "S-1-5-32-545", "BG": "S-1-5-32-546",
    "PU": "S-1-5-32-547", "AU": "S-1-5-11", "WD": "S-1-1-0", "IU": "S-1-5-4",
    "NU": "S-1-5-2", "SU": "S-1-5-6", "AN": "S-1-5-7", "CO": "S-1-3-0", "CG": "S-1-3-1",
    "OW": OWNER_RIGHTS, "NS": "S-1-5-20", "LS": "S-1-5-19", "PS": "S-1-5-10",
    "RC": "S-1-5-12", "AC": "S-1-15-2-1",
}
SID_NAMES = {
    SYSTEM: "SYSTEM", ADMINISTRATORS: "Administrators", TRUSTED_INSTALLER: "TrustedInstaller",
    "S-1-5-32-545": "Users", "S-1-5-11": "Authenticated Users", "S-1-1-0": "Everyone",
    "S-1-5-4": "INTERACTIVE", "S-1-3-0": "CREATOR OWNER", OWNER_RIGHTS: "OWNER RIGHTS",
}

# Access mask bits (winnt.h). On a directory 0x2 adds a file and 0x4 a subdirectory.
_WRITE_DATA, _APPEND_DATA, _DELETE_CHILD = 0x2, 0x4, 0x40
_DELETE, _WRITE_DAC, _WRITE_OWNER = 0x10000, 0x40000, 0x80000
_GENERIC_ALL, _GENERIC_WRITE = 0x10000000, 0x40000000
_RIGHTS = {
    "GA": _GENERIC_ALL, "GW": _GENERIC_WRITE, "GR": 0x80000000, "GX": 0x20000000,
    "SD": _DELETE, "WD": _WRITE_DAC, "WO": _WRITE_OWNER, "RC": 0x20000,
    "FA": 0x1F01FF, "FW": 0x120116, "FR": 0x120089, "FX": 0x1200A0,
    # The directory-service names SDDL also uses for file rights.
    "CC": 0x1, "DC": 0x2, "LC": 0x4, "SW": 0x8, "RP": 0x10, "WP": 0x20, "DT": 0x40,
    "LO": 0x80, "CR": 0x100,
}
# What lets someone else change what the agent reads: for a file its content (or
# delete it, or take its ACL); for a directory the agent keeps files in, also adding
# one; for a directory it only passes through, swapping an entry (deleting or
# renaming one that exists) -- adding a new name there is harmless, like a sticky /tmp.
_DANGEROUS: dict[Role, int] = {
    "file": _WRITE_DATA | _APPEND_DATA | _DELETE | _WRITE_DAC | _WRITE_OWNER | _GENERIC_WRITE
    | _GENERIC_ALL,
    "directory": _WRITE_DATA | _APPEND_DATA | _DELETE_CHILD | _DELETE | _WRITE_DAC
    | _WRITE_OWNER | _GENERIC_WRITE | _GENERIC_ALL,
    "parent": _DELETE_CHILD | _DELETE | _WRITE_DAC | _WRITE_OWNER | _GENERIC_ALL,
    "link": 0,
}
_ALLOW_TYPES = frozenset({"A", "OA", "XA", "ZA"})  # allowed, object, callback (conditional)
_INHERIT_ONLY = "IO"  # the ACE is only handed down; it grants nothing on this object


@dataclass(frozen=True)
class Ace:
    kind: str  # "A" allowed, "D" denied, ...
    flags: frozenset[str]
    mask: int
    sid: str


@dataclass(frozen=True)
class SecurityDescriptor:
    owner: str | None
    dacl: tuple[Ace, ...] | None  # None: a NULL DACL, which grants everyone everything


def sid_name(sid: str | None) -> str:
    if sid is None:
        return "nobody (no owner recorded)"
    return f"{SID_NAMES[sid]} ({sid})" if sid in SID_NAMES else sid


def parse_sddl(sddl: str) -> SecurityDescriptor:
    """The owner and DACL of an SDDL string; ValueError naming what is malformed."""
    owner: str | None = None
    dacl: tuple[Ace, ...] | None = None
    for tag, body in _sections(sddl):
        if tag == "O":
            owner = _sid(body)
        elif tag == "D":
            flags_end = body.find("(")
            flags, aces = (body, "") if flags_end < 0 else (body[:flags_end], body[flags_end:])
            dacl = None if "NO_ACCESS_CONTROL" in flags else tuple(_aces(aces))
    return SecurityDescriptor(owner, dacl)


def judge_sddl(sddl: str, role: Role, trusted: Collection[str]) -> str | None:
    """Why `trusted` SIDs are not the only ones who can change the object, or None.

    The answer completes "it ...": "is owned by Users (S-1-5-32-545)".
    """
    descriptor = parse_sddl(sddl)
    if descriptor.owner not in trusted:
        return f"is owned by {sid_name(descriptor.owner)}"
    if descriptor.dacl is None:
        return "has no access list (a NULL DACL), so everyone may change it"
    for ace in descriptor.dacl:
        if ace.kind not in _ALLOW_TYPES or _INHERIT_ONLY in ace.flags:
            continue
        # The owner is trusted by now, so what OWNER RIGHTS grants is theirs.
        if ace.sid in trusted or ace.sid == OWNER_RIGHTS:
            continue
        if ace.mask & _DANGEROUS[role]:
            inherited = ", inherited from its folder" if "ID" in ace.flags else ""
            return (f"has an access list that lets {sid_name(ace.sid)} change it "
                    f"(rights 0x{ace.mask:x}{inherited})")
    return None


def _sections(sddl: str) -> list[tuple[str, str]]:
    """("O", owner), ("G", group), ("D", dacl), ("S", sacl), split where a tag starts
    outside parentheses (a conditional ACE may hold anything in its own)."""
    sections: list[tuple[str, str]] = []
    depth, start, quoted = 0, -1, False
    text = sddl.strip()
    for index, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' at {index} in SDDL {sddl!r}")
        elif depth == 0 and not quoted and char in "OGDS" and text[index + 1:index + 2] == ":":
            if start >= 0:
                sections.append((text[start], text[start + 2:index]))
            start = index
    if depth or quoted:
        raise ValueError(f"unbalanced '(' or '\"' in SDDL {sddl!r}")
    if not text.startswith(("O:", "G:", "D:", "S:")):
        raise ValueError(f"SDDL {sddl!r} does not start with O:, G:, D: or S:")
    sections.append((text[start], text[start + 2:]))
    return sections


def _aces(text: str) -> list[Ace]:
    aces, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
            if depth == 1:
                start = index + 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                aces.append(_ace(text[start:index]))
    return aces


def _ace(text: str) -> Ace:
    fields = text.split(";", 6)
    if len(fields) < 6:
        raise ValueError(f"malformed ACE ({text}): want type;flags;rights;;;sid")
    kind, flags, rights, _, _, sid = fields[:6]
    return Ace(kind, frozenset(flags[i:i + 2] for i in range(0, len(flags), 2)),
               _mask(rights), _sid(sid))


def _mask(rights: str) -> int:
    if rights.lower().startswith("0x"):
        return int(rights, 16)
    if rights.isdigit():
        return int(rights)
    mask = 0
    for index in range(0, len(rights), 2):
        code = rights[index:index + 2]
        if code not in _RIGHTS:
            # An unknown right might be a write: count it as everything.
            return _GENERIC_ALL
        mask |= _RIGHTS[code]
    return mask


def _sid(text: str) -> str:
    return _SID_ALIASES.get(text, text)


# -- reading a real descriptor ----------------------------------------------------

SE_FILE_OBJECT = 1
OWNER_SECURITY_INFORMATION = 0x1
DACL_SECURITY_INFORMATION = 0x4
SDDL_REVISION_1 = 1
TOKEN_QUERY = 0x8
TOKEN_USER = 1


class WindowsSecurity:
    """A path's owner and DACL as SDDL, and this process's user SID, from advapi32."""

    def __init__(self, advapi32: Any, kernel32: Any, last_error: Callable[[], int]) -> None:
        """`advapi32`/`kernel32`: loaded DLLs (ctypes.WinDLL) or stand-ins with the same
        functions; `last_error`: the thread's Windows error after a failed call."""
        self._dll = advapi32
        self._kernel32 = kernel32
        self._last_error = last_error
        self._dll.GetNamedSecurityInfoW.argtypes = [
            ctypes.c_wchar_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
        self._dll.GetNamedSecurityInfoW.restype = ctypes.c_uint32
        self._dll.ConvertSecurityDescriptorToStringSecurityDescriptorW.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_uint32,
            ctypes.POINTER(ctypes.c_wchar_p), ctypes.c_void_p]
        self._dll.ConvertSidToStringSidW.argtypes = [ctypes.c_void_p,
                                                     ctypes.POINTER(ctypes.c_wchar_p)]
        self._dll.OpenProcessToken.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                               ctypes.POINTER(ctypes.c_void_p)]
        self._dll.GetTokenInformation.argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                  ctypes.c_void_p, ctypes.c_uint32,
                                                  ctypes.POINTER(ctypes.c_uint32)]
        # Handles are pointer-sized: without these, ctypes would pass and return C ints.
        self._kernel32.GetCurrentProcess.restype = ctypes.c_void_p
        self._kernel32.CloseHandle.argtypes = [ctypes.c_void_p]
        self._kernel32.LocalFree.argtypes = [ctypes.c_void_p]
        self._kernel32.LocalFree.restype = ctypes.c_void_p

    @classmethod
    def load(cls) -> WindowsSecurity:
        windll: Any = getattr(ctypes, "WinDLL")  # noqa: B009 - absent off Windows
        return cls(windll("advapi32", use_last_error=True),
                   windll("kernel32", use_last_error=True),
                   getattr(ctypes, "get_last_error"))  # noqa: B009

    def sddl(self, path: str) -> str:
        """The owner and DACL of `path` as SDDL; OSError when Windows cannot say."""
        descriptor = ctypes.c_void_p()
        error = self._dll.GetNamedSecurityInfoW(
            path, SE_FILE_OBJECT, OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
            None, None, None, None, ctypes.byref(descriptor))
        if error:
            raise OSError(None, f"GetNamedSecurityInfoW failed (Windows error {error})", path)
        try:
            text = ctypes.c_wchar_p()
            if not self._dll.ConvertSecurityDescriptorToStringSecurityDescriptorW(
                    descriptor, SDDL_REVISION_1,
                    OWNER_SECURITY_INFORMATION | DACL_SECURITY_INFORMATION,
                    ctypes.byref(text), None):
                raise OSError(None, "ConvertSecurityDescriptorToStringSecurityDescriptorW "
                              f"failed (Windows error {self._last_error()})", path)
            try:
                return text.value or ""
            finally:
                self._kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        finally:
            self._kernel32.LocalFree(descriptor)

    def user_sid(self) -> str:
        """The SID of the user this process runs as (SYSTEM for the service)."""
        token = ctypes.c_void_p()
        if not self._dll.OpenProcessToken(self._kernel32.GetCurrentProcess(), TOKEN_QUERY,
                                          ctypes.byref(token)):
            raise OSError(None, f"OpenProcessToken failed (Windows error {self._last_error()})")
        try:
            # TOKEN_USER starts with a pointer to the SID; 256 bytes hold any SID.
            buffer = ctypes.create_string_buffer(256)
            needed = ctypes.c_uint32()
            if not self._dll.GetTokenInformation(token, TOKEN_USER, buffer, len(buffer),
                                                 ctypes.byref(needed)):
                raise OSError(None, "GetTokenInformation failed "
                              f"(Windows error {self._last_error()})")
            sid = ctypes.c_void_p.from_buffer(buffer).value
            text = ctypes.c_wchar_p()
            if not self._dll.ConvertSidToStringSidW(sid, ctypes.byref(text)):
                raise OSError(None, f"ConvertSidToStringSidW failed "
                              f"(Windows error {self._last_error()})")
            try:
                return text.value or ""
            finally:
                self._kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))
        finally:
            self._kernel32.CloseHandle(token)
