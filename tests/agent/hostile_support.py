"""Hostile things a local user can leave where the agent reads: one planter for each kind.

Shared by tests/agent/test_hostile_files.py and bench/hostile_home.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

KINDS = ("fifo", "socket", "link_to_dev_zero", "link_to_root", "link_loop", "huge",
         "vanishing", "unreadable")
# Bigger than every cap the agent reads with (1 GiB for hashes); sparse, so free on disk.
HUGE_BYTES = 2 * 1024 * 1024 * 1024


def clear(target: Path) -> None:
    if target.is_symlink() or target.is_file() or (target.exists() and not target.is_dir()):
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


@contextlib.contextmanager
def planted(kind: str, target: Path) -> Iterator[None]:
    """`target` replaced by a hostile `kind` (from KINDS) for the time of the block."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clear(target)
    with contextlib.ExitStack() as stack:
        if kind == "fifo":
            os.mkfifo(target)
        elif kind == "socket":
            stack.enter_context(_listening_socket(target))
        elif kind == "link_to_dev_zero":
            target.symlink_to("/dev/zero")
        elif kind == "link_to_root":
            target.symlink_to("/")
        elif kind == "link_loop":
            (target.parent / f"{target.name}.other").symlink_to(target.name)
            target.symlink_to(f"{target.name}.other")
        elif kind == "huge":
            with target.open("wb") as handle:
                handle.truncate(HUGE_BYTES)
        elif kind == "vanishing":
            stack.enter_context(_flickering(target))
        elif kind == "unreadable":
            target.write_bytes(b"secret")
            target.chmod(0)
        else:
            raise ValueError(f"unknown hostile kind {kind!r}: use one of {', '.join(KINDS)}")
        yield
    clear(target)
    if kind == "link_loop":
        clear(target.parent / f"{target.name}.other")


@contextlib.contextmanager
def _listening_socket(target: Path) -> Iterator[None]:
    # A socket's path must fit in 108 bytes: bind it through its folder's descriptor.
    folder = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
            server.bind(f"/proc/self/fd/{folder}/{target.name}")
            server.listen()
            yield
    finally:
        os.close(folder)


# Run as its own process, as the user doing it would be: it competes for the disk,
# not for the reader's interpreter lock.
_FLICKER = """
import os, sys
target = sys.argv[1]
while True:
    for step in (lambda: open(target, "wb").write(b"x" * 65536), lambda: os.unlink(target),
                 lambda: os.mkdir(target), lambda: os.rmdir(target)):
        try:
            step()
        except OSError:
            pass
"""


@contextlib.contextmanager
def _flickering(target: Path) -> Iterator[None]:
    """A file (then a folder) that keeps appearing and vanishing, from another process."""
    process = subprocess.Popen([sys.executable, "-c", _FLICKER, str(target)])
    try:
        yield
    finally:
        process.kill()
        process.wait()
