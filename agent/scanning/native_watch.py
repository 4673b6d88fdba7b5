"""Polls the platform's own blockers and keeps where each stopped, across restarts.

What the sources read is agent.sensors.native_log; this keeps their positions
in one JSON file (the agent's own, in its state folder) and counts blocks of
things the policy does not name, which the server would have no app for.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from agent.prevention.blocker import Blocked
from agent.sensors.native_log import BlockSource, Position, to_blocked
from policies.engine import Engine

MAX_WARNINGS = 20
# Santa and AppLocker have already stopped the program: this only reports, so it may lag.
POLL_SECONDS = 10.0


class NativeBlockSensor:
    """Polls each source; `poll` returns the blocks that map to the policy's apps."""

    def __init__(self, sources: Sequence[BlockSource], state_path: Path,
                 engine: Callable[[], Engine]) -> None:
        self._sources = sources
        self._state_path = state_path
        self._engine = engine
        self.unmapped = 0
        self.warnings: list[str] = []

    def run(self, stop: threading.Event, on_blocked: Callable[[Blocked], None],
            interval: float = POLL_SECONDS) -> None:
        """Poll until `stop` is set, handing each block on; nothing to do without sources."""
        while self._sources and not stop.is_set():
            for blocked in self.poll():
                on_blocked(blocked)
            stop.wait(interval)

    def poll(self) -> list[Blocked]:
        state = self._load()
        found: list[Blocked] = []
        engine = self._engine()
        for source in self._sources:
            position = state.setdefault(source.name, {})
            try:
                blocks = source.read_new(position)
            except (OSError, subprocess.SubprocessError, ValueError) as error:
                self._warn(f"{source.name}: cannot read what it blocked: {error}")
                continue
            for block in blocks:
                blocked = to_blocked(block, engine)
                if blocked is None:
                    self.unmapped += 1
                else:
                    found.append(blocked)
        self._save(state)
        return found

    def _warn(self, text: str) -> None:
        # Kept for the status page; a log that stays unreadable must not grow this forever.
        self.warnings = [*self.warnings[-(MAX_WARNINGS - 1):], text]

    def _load(self) -> dict[str, Position]:
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {name: value for name, value in state.items() if isinstance(value, dict)} \
            if isinstance(state, dict) else {}

    def _save(self, state: dict[str, Position]) -> None:
        # Written aside then renamed: a crash mid-write leaves the old position, not none.
        temporary = self._state_path.with_suffix(".tmp")
        try:
            temporary.write_text(json.dumps(state), encoding="utf-8")
            temporary.replace(self._state_path)
        except OSError as error:
            # The next poll starts from the old position: a repeat, never a loss.
            self._warn(f"cannot save where the native blockers were read up to: "
                                 f"{error}")
