"""The machine's key pair (agent.host.machine): made once, kept 0600, never silently replaced.
(That its statements verify on the server: tests/server/test_machine_key_sync.py.)"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.host.machine import KEY_FILE, MachineKey, MachineKeyError
from agent.state import StateDir


def test_the_key_is_made_once_and_kept_owner_only(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    first = MachineKey.load_or_create(state)
    assert stat.S_IMODE((state.path / KEY_FILE).stat().st_mode) == 0o600
    assert MachineKey.load_or_create(state).public_key == first.public_key
    # Written atomically: no temporary file is left beside it.
    assert sorted(path.name for path in state.path.iterdir()) == [KEY_FILE]


def test_a_damaged_key_file_is_reported_not_replaced(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    (state.path / KEY_FILE).write_text("not a key")
    with pytest.raises(MachineKeyError, match="move it aside"):
        MachineKey.load_or_create(state)
    assert (state.path / KEY_FILE).read_text() == "not a key"
