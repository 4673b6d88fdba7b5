"""Reads what the platform's own blocker blocked, and hands it on as a `Blocked` exec.

Sources: Santa's log (macOS), AppLocker's event channels through `wevtutil`
(Windows), fapolicyd's syslog lines (Linux, when fapolicyd runs and its log is
readable). Each updates a position it is given (a log's inode and offset, an
event channel's last record id; agent.scanning.native_watch keeps them), so a
restart reports nothing twice. A block maps to the policy's app through the
engine (path, SHA-256, name); agent.scanning.native_watch counts the others.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from agent.prevention.blocker import Blocked
from agent.sensors import safe_read
from agent.sensors.native_blocks import (
    NativeBlock,
    parse_applocker_event,
    parse_fapolicyd_line,
    parse_santa_line,
    record_id,
    split_events,
)
from policies.engine import Engine
from policies.observations import ProcessObservation
from policies.vocabulary import OsName

READ_BYTES = 1024 * 1024  # per log, per poll: a burst is read over several polls
MAX_EVENTS = 200  # per AppLocker channel, per poll
COMMAND_SECONDS = 30.0
SANTA_LOG = "var/db/santa/santa.log"
FAPOLICYD_LOGS = ("var/log/messages", "var/log/syslog")
APPLOCKER_CHANNELS = {"Microsoft-Windows-AppLocker/EXE and DLL": (8003, 8004),
                      "Microsoft-Windows-AppLocker/MSI and Script": (8006, 8007)}
NATIVE_NAMES = {"santa": "Santa", "applocker": "AppLocker", "fapolicyd": "fapolicyd"}

CommandRunner = Callable[[Sequence[str]], str]
Position = dict[str, Any]


class BlockSource(Protocol):
    name: str

    def read_new(self, position: Position) -> list[NativeBlock]:
        """The blocks since `position`, which it updates in place."""


def run_command(args: Sequence[str]) -> str:
    done = subprocess.run(list(args), capture_output=True, timeout=COMMAND_SECONDS,
                          check=True, encoding="utf-8", errors="replace")
    return done.stdout


class LogTail:
    """New complete lines of a log file, read through safe_read, parsed by `parse`."""

    def __init__(self, name: str, root: Path, relative: str,
                 parse: Callable[[str], NativeBlock | None]) -> None:
        self.name = name
        self._root = root
        self._path = root / relative
        self._parse = parse

    def read_new(self, position: Position) -> list[NativeBlock]:
        with safe_read.open_file(self._path, beneath=self._root) as (handle, info):
            offset = position.get("offset")
            if (not isinstance(offset, int) or position.get("inode") != info.st_ino
                    or offset > info.st_size):
                # A new or rotated log: from its start, or only its last window if large.
                offset = max(0, info.st_size - READ_BYTES) if offset is None else 0
            handle.seek(offset)
            data = safe_read.read_capped(handle, READ_BYTES)
        end = data.rfind(b"\n") + 1
        if end == 0 and len(data) == READ_BYTES:
            end = len(data)  # one line longer than a whole window: no block record, skipped
        position.update(inode=info.st_ino, offset=offset + end)
        text = data[:end].decode("utf-8", "replace")
        return [block for line in text.splitlines() if (block := self._parse(line))]


class AppLockerEvents:
    """New AppLocker block and audit events, through `wevtutil qe` (newest first, bounded)."""

    name = "applocker"

    def __init__(self, runner: CommandRunner = run_command, count: int = MAX_EVENTS) -> None:
        self._runner = runner
        self._count = count

    def read_new(self, position: Position) -> list[NativeBlock]:
        blocks: list[NativeBlock] = []
        for channel, ids in APPLOCKER_CHANNELS.items():
            last = position.get(channel)
            last = last if isinstance(last, int) else 0
            wanted = " or ".join(f"EventID={event_id}" for event_id in ids)
            output = self._runner(["wevtutil", "qe", channel,
                                   f"/q:*[System[({wanted}) and EventRecordID>{last}]]",
                                   "/rd:true", f"/c:{self._count}", "/f:xml"])
            events = [event for event in split_events(output) if record_id(event) > last]
            for event in reversed(events[:self._count]):  # oldest first
                if block := parse_applocker_event(event):
                    blocks.append(block)
            position[channel] = max([last, *map(record_id, events)])
        return blocks


def native_sources(os_name: OsName, root: Path = Path("/"),
                   runner: CommandRunner = run_command) -> list[BlockSource]:
    """The blockers this OS has and the agent can read; none elsewhere."""
    if os_name == "macos" and safe_read.is_dir(root / "var/db/santa", beneath=root):
        return [LogTail("santa", root, SANTA_LOG, parse_santa_line)]
    if os_name == "windows" and shutil.which("wevtutil"):
        return [AppLockerEvents(runner)]
    if os_name == "linux" and safe_read.is_dir(root / "etc/fapolicyd", beneath=root):
        for log in FAPOLICYD_LOGS:
            if os.access(root / log, os.R_OK):
                return [LogTail("fapolicyd", root, log, parse_fapolicyd_line)]
    return []


def to_blocked(block: NativeBlock, engine: Engine) -> Blocked | None:
    """The block as the Linux blocker reports one, if the policy names the app it stopped."""
    observation = ProcessObservation(pid=block.pid, name=block.name, exe=block.path,
                                     sha256=block.sha256, username=block.user)
    for finding in engine.evaluate(observation):
        # A command line is not in the blocker's record: such a match would be a guess.
        if finding.verdict == "deny" and not finding.matched.startswith("process.cmdline"):
            native = f"{NATIVE_NAMES[block.blocker]} ({block.rule})" if block.rule else \
                NATIVE_NAMES[block.blocker]
            return Blocked(finding, block.path, block.sha256, block.pid, block.user,
                           block.parent, block.enforced, native=native)
    return None
