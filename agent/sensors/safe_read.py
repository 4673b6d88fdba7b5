"""The one way the agent opens files and folders that a local user may have planted.

The agent runs as root and reads homes, Downloads, per-user flatpak, snap,
.desktop and app-bundle folders. Anything there may be hostile: a FIFO (an
open or read that never returns), a socket, a link to /dev/zero (a read that
never ends), to / or to /usr/lib (a walk of the whole disk), a link loop, a
file of many gigabytes, one that vanishes mid-read. So every read site goes
through this module, which:

- resolves the path inside an anchor (the user's home, or the machine root),
  one component at a time from an open folder, the way openat2's
  RESOLVE_BENEATH does: a link may lead anywhere inside the anchor, `..` never
  climbs above it, and at most `MAX_LINKS` links are followed (a loop ends);
- opens without blocking, without following a final link, never as a
  controlling terminal (O_NONBLOCK, O_NOFOLLOW, O_NOCTTY);
- checks what was opened (fstat of the descriptor, not a stat of the path
  beforehand, which a swap could make a lie) to be a regular file or folder;
- reads at most a caller-given number of bytes, and lists at most a given
  number of entries.

Every refusal is an `UnsafePath` (an OSError), with a sentence saying why.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

# Like the kernel's MAXSYMLINKS: enough for any real layout, and a loop ends.
MAX_LINKS = 40
_CHUNK = 1024 * 1024

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_NOCTTY = getattr(os, "O_NOCTTY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_BINARY = getattr(os, "O_BINARY", 0)
# O_PATH (Linux) passes through a folder the agent may enter but not list (0711 homes).
_PASS_THROUGH = getattr(os, "O_PATH", os.O_RDONLY)
_FILE_FLAGS = os.O_RDONLY | _NONBLOCK | _NOCTTY | _CLOEXEC | _BINARY
_DIR_FLAGS = os.O_RDONLY | _DIRECTORY | _NONBLOCK | _CLOEXEC
# Walking from an open folder needs openat (dir_fd); Windows has none, and no FIFOs either.
_AT = os.open in os.supports_dir_fd and os.readlink in os.supports_dir_fd

Kind = Literal["dir", "file", "link", "other"]


class UnsafePath(OSError):
    """A path refused on purpose: it is not a regular file (or folder), too big, or leads out."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One name in a folder, as the folder says it is (links are not followed)."""

    name: str
    path: str
    kind: Kind

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"


def read_file(path: Path, limit: int, *, beneath: Path | None = None) -> bytes:
    """The bytes of a regular file, at most `limit` of them (more is an UnsafePath)."""
    with open_file(path, beneath=beneath) as (handle, _):
        data = read_capped(handle, limit + 1)
    if len(data) > limit:
        raise UnsafePath(errno.EFBIG, f"is larger than {_size(limit)}; not read", str(path))
    return data


@contextlib.contextmanager
def open_file(path: Path | str, *, beneath: Path | None = None, follow: bool = False
              ) -> Iterator[tuple[io.FileIO, os.stat_result]]:
    """A regular file opened for reading, with its fstat.

    `beneath`: the anchor the path must stay in (see the module text). Without
    one the path is opened as given, its last component not followed unless
    `follow` says so: /proc/<pid>/exe is a link that must be followed to reach
    the running image.
    """
    fd = _open(Path(path), beneath, directory=False, follow=follow)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(errno.EINVAL, f"is {_describe(info.st_mode)}, not a regular file; "
                             "not read", str(path))
        handle = io.FileIO(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        yield handle, info


def read_capped(handle: BinaryIO, limit: int) -> bytes:
    """At most `limit` bytes from an open file (a file that shrinks mid-read ends early)."""
    chunks = []
    left = limit
    while left > 0:
        chunk = handle.read(min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def list_dir(path: Path, limit: int, *, beneath: Path | None = None) -> list[Entry]:
    """At most `limit` entries of a folder, sorted by name, none of them followed."""
    if not _AT:
        _check_inside(path, beneath)
        with os.scandir(path) as iterator:
            return _entries(iterator, str(path), limit)
    fd = _open(path, beneath, directory=True, follow=False)
    try:
        # scandir works on a duplicate of the descriptor: ours is still closed here.
        with os.scandir(fd) as iterator:
            return _entries(iterator, str(path), limit)
    finally:
        os.close(fd)


def is_dir(path: Path, *, beneath: Path | None = None, links: bool = True) -> bool:
    """Whether `path` is a folder reached inside its anchor (through no link if not `links`)."""
    try:
        check_dir(path, beneath=beneath, links=links)
    except OSError:
        return False
    return True


def check_dir(path: Path, *, beneath: Path | None = None, links: bool = True) -> None:
    """Nothing when `path` is a folder reached inside its anchor; else why not (an OSError)."""
    if not _AT:
        _check_inside(path, beneath)
        if not path.is_dir() or (not links and path.is_symlink()):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
        return
    os.close(_open(path, beneath, directory=True, follow=False, links=links))


# -- resolution -----------------------------------------------------------------


def _open(path: Path, beneath: Path | None, *, directory: bool, follow: bool,
          links: bool = True) -> int:
    flags = _DIR_FLAGS if directory else _FILE_FLAGS
    if beneath is None or not _AT:
        _check_inside(path, beneath)
        return os.open(path, flags | (0 if follow else _NOFOLLOW))
    try:
        parts = path.relative_to(beneath).parts
    except ValueError:
        raise ValueError(f"{path} is not inside {beneath}") from None
    return _open_beneath(beneath, parts, flags, links)


def _open_beneath(anchor: Path, parts: tuple[str, ...], flags: int, links: bool) -> int:
    """Open anchor/parts, one component at a time, never leaving `anchor`."""
    stack = [os.open(anchor, _PASS_THROUGH | _DIRECTORY | _CLOEXEC)]
    pending = deque(parts)
    followed = 0
    try:
        if not pending:
            return os.open(".", flags, dir_fd=stack[0])
        while pending:
            name = pending.popleft()
            if name in ("", "."):
                if not pending:
                    return os.open(".", flags, dir_fd=stack[-1])
                continue
            if name == "..":
                if len(stack) == 1:
                    raise UnsafePath(errno.EXDEV, "goes through a link that leads out of where "
                                     "it belongs; not followed", str(anchor.joinpath(*parts)))
                os.close(stack.pop())
                if not pending:
                    return os.open(".", flags, dir_fd=stack[-1])
                continue
            last = not pending
            try:
                fd = os.open(name, (flags if last else _PASS_THROUGH | _DIRECTORY | _CLOEXEC)
                             | _NOFOLLOW, dir_fd=stack[-1])
            except OSError as error:
                target = _link_target(name, stack[-1], error)
                if not links:
                    raise UnsafePath(errno.ELOOP, "goes through a link; not followed",
                                     str(anchor.joinpath(*parts))) from None
                followed += 1
                if followed > MAX_LINKS:
                    raise UnsafePath(errno.ELOOP, f"goes through more than {MAX_LINKS} links "
                                     "(a loop?); not followed",
                                     str(anchor.joinpath(*parts))) from None
                if target.startswith(("/", "\\")):
                    raise UnsafePath(errno.EXDEV, f"goes through a link to {target}, out of "
                                     "where it belongs; not followed",
                                     str(anchor.joinpath(*parts))) from None
                pending.extendleft(reversed(target.split("/")))
                continue
            if last:
                return fd
            stack.append(fd)
        return os.open(".", flags, dir_fd=stack[-1])
    finally:
        for fd in stack:
            os.close(fd)


def _link_target(name: str, dir_fd: int, error: OSError) -> str:
    """The target of `name` when opening it failed because it is a link; else re-raise."""
    # ELOOP (Linux, macOS) or EMLINK (FreeBSD) for O_NOFOLLOW on a link; ENOTDIR when
    # a folder was asked for.
    if error.errno not in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
        raise error
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        raise error from None


def _check_inside(path: Path, beneath: Path | None) -> None:
    # Without openat there is no race-free walk: check where the path ends up instead.
    if beneath is not None and not Path(os.path.realpath(path)).is_relative_to(
            os.path.realpath(beneath)):
        raise UnsafePath(errno.EXDEV, "leads out of where it belongs; not followed", str(path))


def _entries(iterator: Iterator[os.DirEntry[str]], folder: str, limit: int) -> list[Entry]:
    found = []
    for entry in iterator:
        found.append(Entry(entry.name, os.path.join(folder, entry.name), _kind(entry)))
        if len(found) >= limit:
            break
    return sorted(found, key=lambda entry: entry.name)


def _kind(entry: os.DirEntry[str]) -> Kind:
    try:
        if entry.is_symlink():
            return "link"
        if entry.is_dir(follow_symlinks=False):
            return "dir"
        return "file" if entry.is_file(follow_symlinks=False) else "other"
    except OSError:
        return "other"


def _describe(mode: int) -> str:
    for check, text in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISDIR, "a folder"), (stat.S_ISLNK, "a link")):
        if check(mode):
            return text
    return "not a regular file"


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
