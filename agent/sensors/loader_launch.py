"""Programs started through the dynamic loader: `ld-linux-x86-64.so.2 ./Telegram`.

The loader maps the program without exec'ing it, so the kernel (and psutil) name
the loader; the process sensor judges the program it runs instead.
"""

from __future__ import annotations

import contextlib
import os
import re

from agent.sensors.process_readers import ProcessInfo

_LOADER = re.compile(r"ld-linux[\w.-]*\.so[\d.]*|ld(64)?\.so[\d.]*|ld-musl-[\w]+\.so[\d.]*")
# Loader options that take a value (ld.so(8)); the program is the first other argument.
_LOADER_VALUE_OPTIONS = frozenset({"--library-path", "--preload", "--audit", "--argv0",
                                   "--inhibit-rpath", "--glibc-hwcaps-mask",
                                   "--glibc-hwcaps-prepend"})


def _loaded_program(info: ProcessInfo) -> str | None:
    """The program a dynamic loader was asked to run (absolute when it can be), or None."""
    if not info.exe or not _LOADER.fullmatch(info.exe.rsplit("/", 1)[-1]):
        return None
    args = list(info.cmdline[1:])
    while args and args[0].startswith("--"):
        option = args.pop(0)
        if option in _LOADER_VALUE_OPTIONS and args:
            args.pop(0)
    if not args:
        return None
    program = args[0]
    if not program.startswith("/"):
        with contextlib.suppress(OSError):
            program = os.path.normpath(os.path.join(os.readlink(f"/proc/{info.pid}/cwd"),
                                                    program))
    return program


def running_program(info: ProcessInfo) -> tuple[str, str | None]:
    """The name and exe of what runs: `ld-linux.so ./Telegram` runs Telegram.

    The loader maps the program without exec'ing it, so the kernel names the
    loader; the program is what runs and what the policy judges.
    """
    program = _loaded_program(info)
    if program is None:
        return info.name, info.exe
    return program.rsplit("/", 1)[-1], program
