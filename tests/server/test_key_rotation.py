"""Rotating the policy-signing key, on the server: what it signs, what it serves, what it
keeps, and how a rotation that stopped half-way is finished.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL (see conftest).
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from policies.compiler import canonical_json
from policies.loader import load_catalog
from server.crypto import key_rotation
from server.crypto.signing import (
    ROTATION_PURPOSE,
    PolicySigner,
    SigningKeyError,
    fingerprint,
    verify_bundle,
    verify_bytes,
)
from server.models import AuditEntry, PolicyVersion
from server.settings import ServerSettings
from server.store import policies
from tests.server.admin_support import ALLOW_TELEGRAM, bearer
from tests.server.conftest import EnrolledAgent

DB = sessionmaker[Session]
API = "/api/v1"


def rotate(settings: ServerSettings, db: DB) -> key_rotation.RotationReport:
    with db() as session:
        return key_rotation.rotate(session, settings.signing_key_path, actor="test")


def served(client: TestClient, agent: EnrolledAgent) -> dict[str, Any]:
    response = client.get(f"{API}/agent/policy", headers=agent.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def checkin_key(client: TestClient, agent: EnrolledAgent) -> str:
    response = client.post(f"{API}/agent/checkin", json={}, headers=agent.headers)
    assert response.status_code == 200, response.text
    key: str = response.json()["policy_public_key"]
    return key


def statement_verifies(item: dict[str, Any]) -> bool:
    statement = item["statement"]
    return verify_bytes(statement["previous_public_key"], canonical_json(statement),
                        item["signature"])


def push(client: TestClient, admin_token: str, text: str) -> int:
    response = client.post(f"{API}/policies", content=text.encode(),
                           headers={**bearer(admin_token), "Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    number: int = response.json()["version_number"]
    return number


def test_a_rotation_is_served_with_the_policy_and_everything_is_signed_anew(
    client: TestClient, settings: ServerSettings, db: DB, admin_token: str,
    enrolled_agent: EnrolledAgent
) -> None:
    old = enrolled_agent.public_key
    second = push(client, admin_token, ALLOW_TELEGRAM)  # stored, not active
    before = served(client, enrolled_agent)
    assert "key_rotations" not in before  # the answer is unchanged until a rotation
    assert checkin_key(client, enrolled_agent) == old

    report = rotate(settings, db)
    new = report.rotation.public_key
    assert new != old and report.rotation.previous_public_key == old
    assert report.rotation.resigned == [1, second] and report.rotation.not_resigned == []

    # The running app signs with the replaced key file from its next use on.
    assert checkin_key(client, enrolled_agent) == new
    after = served(client, enrolled_agent)
    assert after["bundle"] == before["bundle"]  # the same policy, the same ETag
    [item] = after["key_rotations"]
    assert item["statement"]["purpose"] == ROTATION_PURPOSE
    assert item["statement"]["previous_public_key"] == old
    assert item["statement"]["public_key"] == new
    assert statement_verifies(item)
    assert verify_bundle(new, after["bundle"], after["signature"])
    assert not verify_bundle(old, after["bundle"], after["signature"])
    assert verify_bundle(new, after["activation"], after["activation_signature"])
    assert after["activation"]["serial"] > before["activation"]["serial"]
    assert after["activation"]["version"] == before["bundle"]["version"]
    # Stored versions, active or not, verify with the new key only.
    with db() as session:
        for row in session.scalars(sa.select(PolicyVersion)):
            assert verify_bytes(new, row.bundle.encode(), row.signature), row.number
        entry = session.scalars(sa.select(AuditEntry)
                                .where(AuditEntry.action == "signing_key.rotate")).one()
    assert entry.actor == "test" and entry.before == {"public_key": old}
    assert entry.after is not None and entry.after["public_key"] == new

    # A new agent learns the new key, and the rotations that lead to it from the old one.
    enrolled = client.post(f"{API}/agent/enroll", json={**enrolled_agent.facts,
                                                         "machine_id": "another-machine"},
                           headers=bearer(_secret(client, admin_token))).json()
    assert enrolled["policy_public_key"] == new
    assert enrolled["key_rotations"] == after["key_rotations"]
    # And what is signed from now on is signed with the new key.
    activated = client.post(f"{API}/policies/{second}/activate", headers=bearer(admin_token))
    assert activated.status_code == 200, activated.text
    latest = served(client, enrolled_agent)
    assert verify_bundle(new, latest["bundle"], latest["signature"])
    assert verify_bundle(new, latest["activation"], latest["activation_signature"])


def _secret(client: TestClient, admin_token: str) -> str:
    response = client.post(f"{API}/secrets", json={}, headers=bearer(admin_token))
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def test_two_rotations_chain_oldest_first_and_every_key_is_kept_private(
    client: TestClient, settings: ServerSettings, db: DB, enrolled_agent: EnrolledAgent
) -> None:
    first, second = rotate(settings, db), rotate(settings, db)
    chain = served(client, enrolled_agent)["key_rotations"]
    assert [item["statement"]["public_key"] for item in chain] == [
        first.rotation.public_key, second.rotation.public_key]
    assert chain[1]["statement"]["previous_public_key"] == first.rotation.public_key
    assert all(statement_verifies(item) for item in chain)
    assert (second.rotation.activation_serial or 0) > (first.rotation.activation_serial or 0)
    key_path = settings.signing_key_path
    kept = sorted(key_path.parent.glob("policy-signing.*.key"))
    assert [path.name for path in kept] == sorted(
        f"policy-signing.{fingerprint(key)}.key"
        for key in (enrolled_agent.public_key, first.rotation.public_key,
                    second.rotation.public_key))
    for path in [key_path, *kept]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert PolicySigner.load(key_path).public_key_b64 == second.rotation.public_key


def test_a_bundle_changed_in_the_database_is_not_resigned(
    client: TestClient, settings: ServerSettings, db: DB, enrolled_agent: EnrolledAgent
) -> None:
    with db() as session:
        row = session.get(PolicyVersion, 1)
        assert row is not None
        bundle = json.loads(row.bundle)
        bundle["rules"]["telegram"]["verdict"] = "allow"
        row.bundle = canonical_json(bundle).decode()
        session.commit()
    report = rotate(settings, db)
    assert report.rotation.resigned == [] and report.rotation.not_resigned == [1]
    body = served(client, enrolled_agent)
    for key in (enrolled_agent.public_key, report.rotation.public_key):
        assert not verify_bundle(key, body["bundle"], body["signature"])


def test_a_retired_key_signs_nothing_any_more(settings: ServerSettings, db: DB) -> None:
    old = PolicySigner.load(settings.signing_key_path)
    old_copy = PolicySigner.load(key_rotation.keep(old, settings.signing_key_path))
    rotate(settings, db)
    with db() as session, pytest.raises(SigningKeyError, match="retired"):
        policies.activate(session, 1, "test", old_copy)
    with db() as session, pytest.raises(SigningKeyError, match="retired"):
        policies.add_version(session, text=ALLOW_TELEGRAM, source_name="x.yaml",
                             catalog=load_catalog(),
                             signer=old_copy, actor="test")
    # A second rotation started from the old key (say, two admins at once) is refused.
    with db() as session, pytest.raises(SigningKeyError, match="retired"):
        policies.rotate_signing_key(session, old_copy, PolicySigner.generate(), "test")


def interrupted_rotation(settings: ServerSettings, db: DB) -> str:
    """Steps 1-3 of a rotation, not the last: the database is ahead of the key file."""
    key_path = settings.signing_key_path
    old = PolicySigner.load(key_path)
    new = PolicySigner.generate()
    key_rotation.keep(old, key_path)
    key_rotation.keep(new, key_path)
    with db() as session:
        policies.rotate_signing_key(session, old, new, "test")
        session.commit()
    return new.public_key_b64


def test_a_rotation_stopped_before_the_key_file_was_replaced_is_finished(
    settings: ServerSettings, db: DB, initialized: Any
) -> None:
    new = interrupted_rotation(settings, db)
    with db() as session:
        assert key_rotation.key_state(session, settings.signing_key_path).retired
        done = key_rotation.finish_rotation(session, settings.signing_key_path)
        assert done is not None and fingerprint(new) in done
        assert key_rotation.finish_rotation(session, settings.signing_key_path) is None
    assert PolicySigner.load(settings.signing_key_path).public_key_b64 == new


def test_a_host_without_the_current_key_refuses_to_guess(
    settings: ServerSettings, db: DB, initialized: Any
) -> None:
    new = interrupted_rotation(settings, db)
    key_rotation.kept_key_path(settings.signing_key_path, new).unlink()
    before = settings.signing_key_path.read_bytes()
    with db() as session, pytest.raises(SigningKeyError, match=r"copy policy-signing\.key"):
        key_rotation.finish_rotation(session, settings.signing_key_path)
    assert settings.signing_key_path.read_bytes() == before


def test_a_replaced_key_file_is_picked_up_and_a_broken_one_ignored(tmp_path: Path) -> None:
    path = tmp_path / "policy-signing.key"
    signer = PolicySigner.create(path)
    first = signer.public_key_b64
    replacement = PolicySigner.generate()
    replacement.install(path)
    assert signer.public_key_b64 == replacement.public_key_b64 != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("half a key")  # not how rotate-key writes it, but it must not break
    assert signer.public_key_b64 == replacement.public_key_b64
    assert verify_bytes(replacement.public_key_b64, b"data", signer.sign_bytes(b"data"))

