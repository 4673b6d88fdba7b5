"""Windows: who may change a file, judged from its owner SID and DACL as SDDL.

The descriptors are recorded from Windows 10/11 and Server 2022 (`(Get-Acl F).Sddl`),
cut to the owner and DACL. The advapi32 calls that read them are exercised
through stand-in DLLs that answer as Windows does (tests/agent/fake_scm.Export).
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any

import pytest

from agent.host.ownership import UntrustedPath, WindowsInspector, read_trusted, require_trusted
from agent.host.ownership_windows import (
    ADMIN_SIDS,
    TRUSTED_INSTALLER,
    WindowsSecurity,
    judge_sddl,
    parse_sddl,
)
from tests.agent.fake_scm import Export

USER = "S-1-5-21-3623811015-3361044348-30300820-1013"  # an ordinary user of the machine
SERVICE_TRUST = ADMIN_SIDS  # the service runs as SYSTEM
USER_TRUST = ADMIN_SIDS | {USER}  # that user's own `warden-agent scan`

# What the installer makes of %ProgramData%\Warden: Administrators' own, SYSTEM and
# Administrators only, nothing inherited.
INSTALLED = "O:BAG:SYD:PAI(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
# C:\ProgramData itself: Users may add files and folders to it (not remove others').
PROGRAM_DATA = ("O:SYG:SYD:P(A;OICIIO;GA;;;CO)(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"
                "(A;OICI;0x1200a9;;;BU)(A;CI;DCLCRPCR;;;BU)")
# C:\ itself: TrustedInstaller's; Authenticated Users may create folders in it.
DRIVE_ROOT = (f"O:{TRUSTED_INSTALLER}G:{TRUSTED_INSTALLER}D:PAI(A;OICI;FA;;;BA)"
              "(A;OICI;FA;;;SY)(A;OICIIO;GA;;;CO)(A;OICI;0x1200a9;;;BU)(A;CI;LC;;;AU)"
              "(A;OICIIO;SDGXGWGR;;;AU)")
# A Warden folder an ordinary user made in ProgramData before the install (finding 3).
USERS_FOLDER = (f"O:{USER}G:{USER[:-4]}513D:AI(A;ID;FA;;;{USER})(A;OICIIOID;GA;;;CO)"
                "(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)(A;OICIID;0x1200a9;;;BU)"
                "(A;CIID;DCLCRPCR;;;BU)")
# The agent.toml that user put in it.
USERS_FILE = (f"O:{USER}G:{USER[:-4]}513D:AI(A;ID;FA;;;{USER})(A;ID;FA;;;SY)(A;ID;FA;;;BA)"
              "(A;ID;0x1200a9;;;BU)")
# A Warden folder an administrator made by hand: theirs, but ProgramData's "Users may
# add files" came with it.
ADMINS_FOLDER = ("O:BAG:SYD:AI(A;OICIIOID;GA;;;CO)(A;OICIID;FA;;;SY)(A;OICIID;FA;;;BA)"
                 "(A;OICIID;0x1200a9;;;BU)(A;CIID;DCLCRPCR;;;BU)")
ADMINS_FILE = "O:BAG:SYD:AI(A;ID;FA;;;SY)(A;ID;FA;;;BA)(A;ID;0x1200a9;;;BU)"

CASES = [
    # (what, sddl, role, trusted, refused because ... / None: trusted)
    ("the installer's folder", INSTALLED, "directory", SERVICE_TRUST, None),
    ("the installer's folder, passed through", INSTALLED, "parent", SERVICE_TRUST, None),
    ("ProgramData, passed through", PROGRAM_DATA, "parent", SERVICE_TRUST, None),
    ("ProgramData as the folder files are kept in", PROGRAM_DATA, "directory",
     SERVICE_TRUST, "lets Users (S-1-5-32-545) change it (rights 0x116)"),
    ("C:\\, passed through", DRIVE_ROOT, "parent", SERVICE_TRUST, None),
    ("a user's Warden folder", USERS_FOLDER, "directory", SERVICE_TRUST,
     f"is owned by {USER}"),
    ("a user's Warden folder, passed through", USERS_FOLDER, "parent", SERVICE_TRUST,
     f"is owned by {USER}"),
    ("a user's agent.toml", USERS_FILE, "file", SERVICE_TRUST, f"is owned by {USER}"),
    ("a user's agent.toml, for that user's own scan", USERS_FILE, "file", USER_TRUST, None),
    ("an admin's hand-made folder: inherited Users write", ADMINS_FOLDER, "directory",
     SERVICE_TRUST, "lets Users (S-1-5-32-545) change it (rights 0x116, inherited from its "
     "folder)"),
    ("an admin's hand-made folder, passed through", ADMINS_FOLDER, "parent", SERVICE_TRUST,
     None),
    ("an admin's file, Users may read it", ADMINS_FILE, "file", SERVICE_TRUST, None),
    ("owned by SYSTEM", "O:SYD:PAI(A;;FA;;;SY)(A;;FA;;;BA)", "file", SERVICE_TRUST, None),
    ("owned by TrustedInstaller", f"O:{TRUSTED_INSTALLER}D:PAI(A;;FA;;;{TRUSTED_INSTALLER})"
     "(A;;0x1200a9;;;BA)(A;;0x1200a9;;;BU)", "file", SERVICE_TRUST, None),
    ("an explicit ACE: Users may modify", "O:BAD:PAI(A;;FA;;;SY)(A;;0x1301bf;;;BU)", "file",
     SERVICE_TRUST, "lets Users (S-1-5-32-545) change it (rights 0x1301bf)"),
    ("Everyone: full control", "O:SYD:(A;;FA;;;WD)", "file", SERVICE_TRUST,
     "lets Everyone (S-1-1-0) change it"),
    ("Authenticated Users: generic write", "O:SYD:(A;;GW;;;AU)", "file", SERVICE_TRUST,
     "lets Authenticated Users (S-1-5-11) change it (rights 0x40000000)"),
    ("a user may take ownership", f"O:BAD:(A;;WO;;;{USER})", "file", SERVICE_TRUST,
     f"lets {USER} change it"),
    ("a user may delete what is in a folder passed through", f"O:BAD:(A;;DT;;;{USER})",
     "parent", SERVICE_TRUST, f"lets {USER} change it (rights 0x40)"),
    ("Users may only add files to a folder passed through", "O:BAD:(A;;DCLC;;;BU)",
     "parent", SERVICE_TRUST, None),
    ("a write ACE that is only handed down to new files", "O:BAD:P(A;OICIIO;FA;;;BU)",
     "file", SERVICE_TRUST, None),
    ("a deny ACE takes away, never grants", "O:BAD:(D;;FW;;;BU)(A;;FA;;;BA)", "file",
     SERVICE_TRUST, None),
    ("OWNER RIGHTS of a trusted owner", "O:BAD:(A;;FA;;;OW)", "file", SERVICE_TRUST, None),
    ("a NULL DACL", "O:BAD:NO_ACCESS_CONTROL", "file", SERVICE_TRUST,
     "has no access list (a NULL DACL), so everyone may change it"),
    ("an empty DACL: nobody may do anything", "O:BAD:P", "file", SERVICE_TRUST, None),
    ("a conditional ACE counts as granted", "O:BAD:(XA;;FA;;;WD;(Member_of {SID(BA)}))",
     "file", SERVICE_TRUST, "lets Everyone (S-1-1-0) change it"),
    ("rights the agent does not know count as all", "O:BAD:(A;;KA;;;BU)", "file",
     SERVICE_TRUST, "lets Users (S-1-5-32-545) change it (rights 0x10000000)"),
    ("a link: only its owner matters", f"O:BAD:(A;;FA;;;{USER})", "link", SERVICE_TRUST,
     None),
    ("no owner recorded", "D:PAI(A;;FA;;;SY)", "file", SERVICE_TRUST,
     "is owned by nobody (no owner recorded)"),
]


@pytest.mark.parametrize(("what", "sddl", "role", "trusted", "refused"), CASES,
                         ids=[case[0] for case in CASES])
def test_judge_sddl(what: str, sddl: str, role: Any, trusted: frozenset[str],
                    refused: str | None) -> None:
    problem = judge_sddl(sddl, role, trusted)
    if refused is None:
        assert problem is None, problem
    else:
        assert problem is not None and refused in problem, problem


def test_parse_sddl_reads_owner_and_aces_with_their_inheritance() -> None:
    descriptor = parse_sddl(USERS_FOLDER)
    assert descriptor.owner == USER
    assert descriptor.dacl is not None
    first, creator = descriptor.dacl[:2]
    assert (first.kind, first.flags, first.mask, first.sid) == ("A", frozenset({"ID"}), 0x1F01FF,
                                                                  USER)
    assert (creator.flags, creator.mask, creator.sid) == (
        frozenset({"OI", "CI", "IO", "ID"}), 0x10000000, "S-1-3-0")


@pytest.mark.parametrize("sddl", ["", "BA", "O:BAD:(A;;FA", "O:BAD:A;;FA;;;BA)",
                                  "O:BAD:(A;;FA)"])
def test_malformed_sddl_is_a_clear_error(sddl: str) -> None:
    with pytest.raises(ValueError, match=r"SDDL|ACE"):
        parse_sddl(sddl)


# -- the walk, with Windows' rules: each entry's recorded descriptor ---------------


def recorded(descriptors: dict[Path, str], default: str = INSTALLED) -> WindowsInspector:
    return WindowsInspector(lambda path: descriptors.get(Path(path), default), SERVICE_TRUST)


def test_a_planted_agent_toml_is_refused_with_the_icacls_fix(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("notify_command = 'C:\\\\Users\\\\mallory\\\\evil.exe'\n")
    inspector = recorded({path: USERS_FILE})
    with pytest.raises(UntrustedPath) as refused:
        read_trusted(path, "the agent config file", inspector)
    message = str(refused.value)
    assert f"refusing the agent config file {path}: it is owned by {USER}" in message
    assert (f'Fix: icacls "{path}" /setowner *S-1-5-32-544 && icacls "{path}" /inheritance:r '
            "/grant:r *S-1-5-18:F *S-1-5-32-544:F") in message


def test_a_folder_on_the_way_that_users_may_empty_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text("")
    inspector = recorded({tmp_path: "O:BAD:(A;;FA;;;BA)(A;OICI;0x1301bf;;;BU)",
                          path: ADMINS_FILE})
    with pytest.raises(UntrustedPath, match=f"the directory {tmp_path} on its path has an "
                                            "access list that lets Users"):
        read_trusted(path, "the agent config file", inspector)
    inspector = recorded({tmp_path: PROGRAM_DATA, path: ADMINS_FILE})
    assert read_trusted(path, "the agent config file", inspector) == b""


def test_an_unreadable_descriptor_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UntrustedPath, match="security descriptor the agent cannot read"):
        require_trusted(tmp_path, "the agent state directory", "directory",
                        recorded({tmp_path: "O:BAD:(A;;FA"}))


# -- reading a real descriptor through advapi32 (stand-in DLLs) ------------------


class FakeSecurityDlls:
    """advapi32 and kernel32 answering as Windows does, writing through the pointers."""

    def __init__(self, sddl: str, sid: str, error: int = 0) -> None:
        self.sddl, self.sid, self.error = sddl, sid, error
        self.freed: list[int] = []
        self.closed: list[int] = []
        self.asked: list[tuple[str, int, int]] = []
        self.advapi32 = type("advapi32", (), {})()
        self.kernel32 = type("kernel32", (), {})()
        for name in ("GetNamedSecurityInfoW", "ConvertSidToStringSidW", "OpenProcessToken",
                     "ConvertSecurityDescriptorToStringSecurityDescriptorW",
                     "GetTokenInformation"):
            setattr(self.advapi32, name, Export(getattr(self, f"_{name}")))
        self.kernel32.LocalFree = Export(lambda pointer: self.freed.append(_address(pointer)))
        self.kernel32.GetCurrentProcess = Export(lambda: -1)
        self.kernel32.CloseHandle = Export(lambda handle: self.closed.append(_address(handle)))

    def _GetNamedSecurityInfoW(self, path: str, kind: int, info: int, *out: Any) -> int:
        self.asked.append((path, kind, info))
        if self.error:
            return self.error
        out[-1]._obj.value = 0xD5C  # the descriptor Windows allocated
        return 0

    def _ConvertSecurityDescriptorToStringSecurityDescriptorW(
            self, descriptor: Any, revision: int, info: int, text: Any, length: Any) -> int:
        assert (_address(descriptor), revision, info) == (0xD5C, 1, 0x5)
        text._obj.value = self.sddl
        return 1

    def _OpenProcessToken(self, process: int, access: int, token: Any) -> int:
        assert (process, access) == (-1, 0x8)
        token._obj.value = 0x70C
        return 1

    def _GetTokenInformation(self, token: Any, kind: int, buffer: Any, size: int,
                             needed: Any) -> int:
        assert (_address(token), kind) == (0x70C, 1)
        ctypes.c_void_p.from_buffer(buffer).value = 0x51D  # TOKEN_USER.User.Sid
        return 1

    def _ConvertSidToStringSidW(self, sid: Any, text: Any) -> int:
        assert sid == 0x51D
        text._obj.value = self.sid
        return 1

    def security(self) -> WindowsSecurity:
        return WindowsSecurity(self.advapi32, self.kernel32, lambda: 0)


def _address(pointer: Any) -> int:
    return int(getattr(pointer, "value", pointer) or 0)


def test_windows_security_reads_owner_and_dacl_and_frees_what_windows_allocated() -> None:
    dlls = FakeSecurityDlls(USERS_FILE, USER)
    assert dlls.security().sddl(r"C:\ProgramData\Warden\agent.toml") == USERS_FILE
    assert dlls.asked == [(r"C:\ProgramData\Warden\agent.toml", 1, 0x5)]
    assert 0xD5C in dlls.freed and len(dlls.freed) == 2  # the descriptor and the string


def test_windows_security_says_which_path_it_could_not_read() -> None:
    dlls = FakeSecurityDlls(USERS_FILE, USER, error=5)
    with pytest.raises(OSError, match="Windows error 5") as failed:
        dlls.security().sddl(r"C:\ProgramData\Warden")
    assert failed.value.filename == r"C:\ProgramData\Warden"
    assert dlls.freed == []


def test_windows_security_knows_the_user_it_runs_as() -> None:
    dlls = FakeSecurityDlls(INSTALLED, "S-1-5-18")
    assert dlls.security().user_sid() == "S-1-5-18"
    assert dlls.closed == [0x70C] and len(dlls.freed) == 1


def test_windows_security_is_windows_only() -> None:
    if os.name == "nt":
        pytest.skip("this is Windows: the real DLLs load")
    with pytest.raises(AttributeError):
        WindowsSecurity.load()
