"""Sensors that hang for real: the way a read on a dead NFS home or a locked package database does.

`BlockedInstalled` is an installed-apps source (agent.scanning.sensor_set.InstalledSource)
whose scan blocks in `open()` of a FIFO nobody writes to (a real system call,
which no Python code can interrupt) or on an Event the test sets; until then
the agent must carry on without it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from policies.observations import InstalledObservation

# The .desktop entry of Telegram, as the Linux backend reports it.
TELEGRAM_DESKTOP = InstalledObservation(
    source="desktop", id="org.telegram.desktop.desktop",
    path="/usr/share/applications/org.telegram.desktop.desktop")


def make_fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


class BlockedInstalled:
    def __init__(self, *, release: threading.Event | None = None, fifo: Path | None = None,
                 found: tuple[InstalledObservation, ...] = (TELEGRAM_DESKTOP,),
                 error: Exception | None = None) -> None:
        self.release = release
        self.fifo = fifo
        self.found = found
        self.error = error
        self.warnings: list[str] = []
        self.scans = 0
        self.entered = threading.Event()

    def scan(self) -> list[InstalledObservation]:
        self.scans += 1
        self.entered.set()
        if self.fifo is not None:
            # Blocks in open(2) until a writer opens the FIFO: for good, if none does.
            with self.fifo.open("rb") as stream:
                stream.read()
        if self.release is not None:
            self.release.wait()
        if self.error is not None:
            raise self.error
        return list(self.found)

    def watch_paths(self) -> list[Path]:
        return []

    def recursive_watch_paths(self) -> list[Path]:
        return []
