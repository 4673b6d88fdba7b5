"""The thin ctypes layer over Linux fanotify permission events (no logic but the kernel's).

`FAN_OPEN_EXEC_PERM` (kernel >= 5.0) makes every exec of a file on a marked
mount wait until the group answers ALLOW or DENY. Marks are per mount
(`FAN_MARK_MOUNT`), never per superblock: a test that marks the mounts of its
own private mount namespace then guards only that namespace, and the rest of
the machine never waits on it.

The kernel has no timeout for an unanswered event; closing the group's fd
answers every pending one with ALLOW. That is the escape hatch the blocker's
deadman (and `kill -9`, which closes every fd) relies on.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass

FAN_CLOEXEC = 0x00000001
FAN_NONBLOCK = 0x00000002
FAN_CLASS_CONTENT = 0x00000004
FAN_MARK_ADD = 0x00000001
FAN_MARK_REMOVE = 0x00000002
FAN_MARK_MOUNT = 0x00000010
FAN_OPEN_EXEC_PERM = 0x00040000
FAN_Q_OVERFLOW = 0x00004000
FAN_ALLOW = 0x01
FAN_DENY = 0x02
FAN_NOFD = -1
AT_FDCWD = -100

_METADATA = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_RESPONSE = struct.Struct("=iI")  # fd, response
METADATA_SIZE = _METADATA.size

# Filesystems that hold no programs, or whose files the kernel cannot show us reliably.
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "debugfs", "tracefs",
    "securityfs", "pstore", "bpf", "configfs", "fusectl", "binfmt_misc", "hugetlbfs",
    "autofs", "rpc_pipefs", "nsfs", "efivarfs", "selinuxfs",
})
# Network filesystems are not marked: a permission event waiting on a server that is gone
# would hang every exec from it (docs/deploy.md says so; the process sensor covers them).
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs",
    "fuse.sshfs", "lustre",
})


class FanotifyUnavailable(Exception):
    """The kernel (or our privileges) refuse permission events; the message says which."""


@dataclass(frozen=True)
class PermissionEvent:
    mask: int
    fd: int
    pid: int


@dataclass(frozen=True)
class Mount:
    mount_id: int  # a mount replaced at the same path (a new tmpfs) has a new id
    path: str
    fstype: str


_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
        libc.fanotify_init.restype = ctypes.c_int
        libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                                       ctypes.c_int, ctypes.c_char_p]
        libc.fanotify_mark.restype = ctypes.c_int
        _libc = libc
    return _libc


def init_group() -> int:
    """A permission-class fanotify group's fd (non-blocking, close-on-exec)."""
    try:
        libc = _lib()
    except (OSError, AttributeError) as exc:
        raise FanotifyUnavailable(f"no fanotify in this C library ({exc})") from exc
    event_flags = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
    fd: int = libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_CONTENT, event_flags)
    if fd < 0:
        code = ctypes.get_errno()
        hint = {errno.EPERM: " (needs root: CAP_SYS_ADMIN)",
                errno.EINVAL: " (kernel without CONFIG_FANOTIFY_ACCESS_PERMISSIONS?)",
                errno.ENOSYS: " (kernel without fanotify)"}.get(code, "")
        raise FanotifyUnavailable(f"fanotify_init failed: {os.strerror(code)}{hint}")
    return fd


def mark_mount(group: int, path: str) -> None:
    """Ask for exec permission events on the mount `path` is on; OSError if refused."""
    result = _lib().fanotify_mark(group, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_EXEC_PERM,
                                  AT_FDCWD, os.fsencode(path))
    if result < 0:
        code = ctypes.get_errno()
        if code == errno.EINVAL:
            raise FanotifyUnavailable("the kernel has no FAN_OPEN_EXEC_PERM (needs Linux 5.0)")
        raise OSError(code, os.strerror(code), path)


def read_events(group: int, size: int = 64 * METADATA_SIZE) -> list[PermissionEvent]:
    """The events waiting (none: []); a fd of FAN_NOFD with FAN_Q_OVERFLOW is a lost queue."""
    try:
        data = os.read(group, size)
    except BlockingIOError:
        return []
    events = []
    offset = 0
    while offset + METADATA_SIZE <= len(data):
        length, _vers, _, _meta, mask, fd, pid = _METADATA.unpack_from(data, offset)
        if length < METADATA_SIZE:
            break
        events.append(PermissionEvent(mask, fd, pid))
        offset += length
    return events


def response(fd: int, allow: bool) -> bytes:
    return _RESPONSE.pack(fd, FAN_ALLOW if allow else FAN_DENY)


def local_mounts(mountinfo: str = "/proc/self/mountinfo") -> Iterator[Mount]:
    """Every mount that can hold programs: local disks, tmpfs, overlay, FUSE images."""
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            fields = line.split()
            if " - " not in line or len(fields) < 7:
                continue
            after = line.split(" - ", 1)[1].split()
            fstype = after[0] if after else ""
            if fstype in PSEUDO_FILESYSTEMS or fstype in NETWORK_FILESYSTEMS:
                continue
            yield Mount(int(fields[0]), _unescape(fields[4]), fstype)


def _unescape(path: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...).
    out, index = [], 0
    while index < len(path):
        if path[index] == "\\" and path[index + 1:index + 4].isdigit() and index + 4 <= len(path):
            out.append(chr(int(path[index + 1:index + 4], 8)))
            index += 4
        else:
            out.append(path[index])
            index += 1
    return "".join(out)
