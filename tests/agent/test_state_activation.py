"""Signed activation serials in the agent: which offered bundle replaces the one in force,
how an activation is verified, and how it is kept with the policy in the state dir."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.state import (
    ACTIVATION_PURPOSE,
    Activation,
    BundleRejected,
    StateDir,
    refuse_older,
    verify_activation,
)
from policies.compiler import canonical_json, compile_bundle
from policies.loader import default_policy_path, load_catalog, load_policy

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


def document(serial: Any, version: str, **changes: Any) -> dict[str, Any]:
    return {"purpose": ACTIVATION_PURPOSE, "serial": serial,
            "activated_at": "2026-01-15T10:00:00.000+00:00", "version": version, **changes}


def activation(serial: int, version: str = "a" * 64) -> Activation:
    doc = document(serial, version)
    return Activation(serial, doc["activated_at"], version, doc, KEY.sign(canonical_json(doc)))


# (offered, in force, accepted?) — what replaces the policy in force.
CASES = [
    (activation(8), activation(7), True),  # a newer activation
    (activation(8, "b" * 64), activation(7), True),  # newer, another version (a rollback)
    (activation(7), activation(7), True),  # the policy in force, offered again: no change
    (activation(6), activation(7), False),  # an older one, replayed
    (activation(7, "b" * 64), activation(7), False),  # the same serial for another version
    (None, activation(7), False),  # the activation stripped off
    (activation(1), None, True),  # nothing in force yet (first policy, or an old state dir)
    (None, None, True),  # a server from before serials, an agent that has none yet
]


@pytest.mark.parametrize(("offered", "in_force", "accepted"), CASES)
def test_only_an_activation_at_least_as_new_as_the_one_in_force_is_taken(
    offered: Activation | None, in_force: Activation | None, accepted: bool
) -> None:
    if accepted:
        refuse_older(offered, in_force)
    else:
        with pytest.raises(BundleRejected, match="replayed or downgraded"):
            refuse_older(offered, in_force)


def test_a_signed_activation_of_the_bundle_verifies(bundle: dict[str, Any]) -> None:
    doc = document(42, bundle["version"])
    verified = verify_activation(doc, KEY.sign(canonical_json(doc)), PUBLIC, bundle)
    assert verified is not None
    assert (verified.serial, verified.version) == (42, bundle["version"])
    assert verify_activation(None, None, PUBLIC, bundle) is None


@pytest.mark.parametrize(("change", "message"), [
    ({"serial": 43}, "signature"),  # edited after signing
    ({"other_key": True}, "signature"),
    ({"unsigned": True}, "not signed"),
    ({"version": "f" * 64, "resign": True}, "another bundle version"),
    ({"purpose": "something else", "resign": True}, "malformed"),
    ({"serial": True, "resign": True}, "malformed"),
    ({"serial": "42", "resign": True}, "malformed"),
])
def test_a_bad_activation_is_refused(bundle: dict[str, Any], change: dict[str, Any],
                                     message: str) -> None:
    doc = document(42, bundle["version"])
    signature: bytes | None = KEY.sign(canonical_json(doc))
    key = PUBLIC
    fields = {name: value for name, value in change.items()
              if name not in ("other_key", "unsigned", "resign")}
    doc = {**doc, **fields}
    if change.get("resign"):
        signature = KEY.sign(canonical_json(doc))
    if change.get("other_key"):
        key = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw,
                                                                     PublicFormat.Raw)
    if change.get("unsigned"):
        signature = None
    with pytest.raises(BundleRejected, match=message):
        verify_activation(doc, signature, key, bundle)


def test_the_activation_is_kept_with_the_policy_and_verified_again(
    tmp_path: Path, bundle: dict[str, Any]
) -> None:
    state = StateDir(tmp_path)
    doc = document(42, bundle["version"])
    signed = verify_activation(doc, KEY.sign(canonical_json(doc)), PUBLIC, bundle)
    state.save_policy(bundle, KEY.sign(canonical_json(bundle)), signed)
    loaded = state.load_signed_policy(PUBLIC)
    assert loaded is not None and loaded.bundle == bundle and loaded.activation == signed
    # Lowering the serial on disk, to let an older policy in, breaks its signature.
    path = tmp_path / "policy.json"
    data = json.loads(path.read_text())
    data["activation"]["serial"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(BundleRejected, match="activation signature"):
        state.load_signed_policy(PUBLIC)
    with pytest.raises(BundleRejected):
        state.load_policy(PUBLIC)


def test_a_policy_json_from_before_serials_still_loads(
    tmp_path: Path, bundle: dict[str, Any]
) -> None:
    # Exactly what the agent wrote before activation serials existed.
    (tmp_path / "policy.json").write_text(json.dumps({
        "bundle": bundle,
        "signature": base64.b64encode(KEY.sign(canonical_json(bundle))).decode()}))
    state = StateDir(tmp_path)
    loaded = state.load_signed_policy(PUBLIC)
    assert loaded is not None and loaded.bundle == bundle and loaded.activation is None
    assert state.load_policy(PUBLIC) == bundle


def test_an_unreadable_policy_json_is_refused_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "policy.json").write_text('{"bundle": {}, "signature": "not base64!"}')
    with pytest.raises(BundleRejected, match="unreadable"):
        StateDir(tmp_path).load_policy(PUBLIC)
