"""The state directory: private files, pinned key, verified last-known-good policy."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from agent.state import BundleRejected, Identity, StateDir, verify_bundle
from policies.compiler import canonical_json, compile_bundle
from policies.loader import default_policy_path, load_catalog, load_policy


@pytest.fixture(scope="module")
def bundle() -> dict:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


def _keypair() -> tuple[Ed25519PrivateKey, bytes]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def test_identity_round_trip_and_private_mode(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state")
    identity = Identity("a-1", "tok", "http://127.0.0.1:1", b"k" * 32, "ops")
    state.save_identity(identity)
    assert state.load_identity() == identity
    path = tmp_path / "state" / "identity.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert list((tmp_path / "state").glob(".identity.json.*")) == []  # no temp file left


def test_signed_bundle_verifies_and_is_cached(tmp_path: Path, bundle: dict) -> None:
    key, public = _keypair()
    signature = key.sign(canonical_json(bundle))
    state = StateDir(tmp_path)
    assert verify_bundle(bundle, signature, public) is bundle
    state.save_policy(bundle, signature)
    assert state.load_policy(public) == bundle


@pytest.mark.parametrize("tamper", ["flip_signature", "edit_bundle", "other_key", "rehash"])
def test_tampered_bundles_are_refused(bundle: dict, tamper: str) -> None:
    key, public = _keypair()
    signature = key.sign(canonical_json(bundle))
    candidate = json.loads(json.dumps(bundle))
    if tamper == "flip_signature":
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    elif tamper == "edit_bundle":
        candidate["policy"]["mode"] = "enforce"
    elif tamper == "other_key":
        public = _keypair()[1]
    else:  # a consistent hash does not help without the key
        candidate["rules"]["telegram"]["verdict"] = "allow"
        from policies.compiler import bundle_version
        candidate["version"] = bundle_version(candidate)
    with pytest.raises(BundleRejected):
        verify_bundle(candidate, signature, public)


def test_a_cached_bundle_edited_on_disk_is_refused(tmp_path: Path, bundle: dict) -> None:
    key, public = _keypair()
    state = StateDir(tmp_path)
    state.save_policy(bundle, key.sign(canonical_json(bundle)))
    path = tmp_path / "policy.json"
    data = json.loads(path.read_text())
    data["bundle"]["rules"]["telegram"]["verdict"] = "allow"
    path.write_text(json.dumps(data))
    with pytest.raises(BundleRejected):
        state.load_policy(public)
