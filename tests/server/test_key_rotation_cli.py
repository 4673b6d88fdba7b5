"""`warden server public-key`, `warden server rotate-key`, and `warden server run` finishing a
rotation that stopped half-way — the commands on a real data directory and database."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.bootstrap import InitResult
from server.cli import main
from server.crypto.signing import PolicySigner, fingerprint
from server.settings import ServerSettings
from tests.server.conftest import EnrolledAgent
from tests.server.test_key_rotation import DB, interrupted_rotation

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def warden(settings: ServerSettings, monkeypatch: pytest.MonkeyPatch,
           capsys: pytest.CaptureFixture[str]) -> Run:
    """`warden("server", "public-key")` on this test's data directory: (code, out, err)."""
    monkeypatch.setenv("WARDEN_DATABASE_URL", settings.resolved_database_url)

    def invoke(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([*argv, "--data-dir", str(settings.data_dir)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_public_key_prints_what_agents_pin_and_rotate_key_moves_it(
    warden: Run, settings: ServerSettings, client: TestClient, enrolled_agent: EnrolledAgent
) -> None:
    code, out, _ = warden("server", "public-key")
    assert code == 0 and out == enrolled_agent.public_key + "\n"

    code, out, err = warden("server", "rotate-key")
    assert code == 0, err
    new = PolicySigner.load(settings.signing_key_path).public_key_b64
    assert f"New public key (for WARDEN_AGENT_POLICY_PUBLIC_KEY): {new}" in out
    assert f"{fingerprint(enrolled_agent.public_key)} -> {fingerprint(new)}" in out
    assert "Re-signed policy versions: 1;" in out

    code, out, _ = warden("server", "public-key")
    assert out == new + "\n"
    code, out, _ = warden("server", "public-key", "--json")
    shown = json.loads(out)
    assert shown["public_key"] == new and shown["fingerprint"] == fingerprint(new)
    assert [(item["previous_public_key"], item["public_key"]) for item in shown["rotations"]] \
        == [(enrolled_agent.public_key, new)]
    # The running server took the new key without a restart.
    checked_in = client.post("/api/v1/agent/checkin", json={}, headers=enrolled_agent.headers)
    assert checked_in.json()["policy_public_key"] == new


def test_rotate_key_json(warden: Run, initialized: InitResult) -> None:
    code, out, err = warden("server", "rotate-key", "--json")
    assert code == 0, err
    report: dict[str, Any] = json.loads(out)
    assert report["previous_public_key"] != report["public_key"]
    assert report["fingerprint"] == fingerprint(report["public_key"])
    assert report["resigned_versions"] == [1] and report["not_resigned_versions"] == []
    assert report["activation_serial"] > 0
    assert report["finished_interrupted_rotation"] is None
    assert len(report["kept_keys"]) == 2


def test_the_commands_refuse_a_directory_that_is_not_initialised(
    warden: Run, settings: ServerSettings
) -> None:
    for command in ("public-key", "rotate-key"):
        code, _, err = warden("server", command)
        assert code == 1 and "is not initialised" in err
    assert not settings.data_dir.exists() or not any(settings.data_dir.iterdir())


def test_run_finishes_an_interrupted_rotation_before_it_serves(
    warden: Run, settings: ServerSettings, initialized: InitResult, db: DB,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    served: list[Any] = []
    monkeypatch.setattr("uvicorn.run", lambda app, **options: served.append(app))
    new = interrupted_rotation(settings, db)
    code, out, err = warden("server", "public-key")
    assert out == new + "\n" and "retired key" in err  # what agents will trust
    code, _, err = warden("server", "run")
    assert code == 0, err
    assert "finished an interrupted key rotation" in err and len(served) == 1
    assert PolicySigner.load(settings.signing_key_path).public_key_b64 == new


def test_run_refuses_a_retired_key_it_cannot_replace(
    warden: Run, settings: ServerSettings, initialized: InitResult, db: DB,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("uvicorn.run", lambda app, **options: pytest.fail("served"))
    interrupted_rotation(settings, db)
    for kept in settings.data_dir.glob("policy-signing.*.key"):
        kept.unlink()  # another host's copy of the data directory: only the old key
    code, _, err = warden("server", "run")
    assert code == 1 and "retired" in err and "copy policy-signing.key" in err
