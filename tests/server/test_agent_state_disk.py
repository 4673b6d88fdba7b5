"""The agent's PolicySync against a real server when its state disk refuses writes.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.state import StateDir
from tests.server.test_key_pinning import Server, server, stock_version

__all__ = ["server"]  # the fixture, shared with test_key_pinning


def full_disk_once(state: StateDir, method: str, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make `state.<method>` fail as on a full disk the first time; the calls made."""
    save = getattr(state, method)
    attempts: list[int] = []

    def save_unless_first(*args: Any, **kwargs: Any) -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError(28, "No space left on device")
        save(*args, **kwargs)

    monkeypatch.setattr(state, method, save_unless_first)
    return attempts


def test_a_policy_that_cannot_be_saved_is_enforced_now_and_saved_later(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = server.agent(tmp_path / "agent")
    state = agent.sync.state
    attempts = full_disk_once(state, "save_policy", monkeypatch)
    assert agent.sync._attempt() > 0
    # Verified, so enforced at once, though not yet on disk.
    assert agent.applied == [stock_version()]
    assert not (tmp_path / "agent" / "policy.json").exists()
    # The next check-in fetches it again and saves it; nothing is applied twice.
    assert agent.sync._attempt() > 0
    assert len(attempts) == 2
    assert state.load_policy(state.load_identity().policy_public_key)["version"] == \
        stock_version()  # type: ignore[union-attr]
    assert agent.applied == [stock_version()]
    assert agent.failures == []


def test_an_identity_that_cannot_be_saved_is_retried_not_fatal(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = server.agent(tmp_path / "agent")
    state = agent.sync.state
    full_disk_once(state, "save_identity", monkeypatch)
    assert agent.sync._attempt() > 0  # the thread's loop would carry on
    assert "No space left on device" in agent.failures[0]
    agent.sync._attempt()
    assert state.load_identity() is not None and agent.applied == [stock_version()]
