"""Policy signing: what the server signs, an agent verifies; any change breaks it."""

from __future__ import annotations

import base64
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from policies.compiler import canonical_json, compile_bundle
from policies.loader import default_policy_path, load_catalog, load_policy
from server.crypto.signing import PolicySigner, SigningKeyError, verify_bundle, verify_bytes


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


@pytest.fixture
def signer(tmp_path: Path) -> PolicySigner:
    return PolicySigner.create(tmp_path / "policy-signing.key")


def test_a_signed_bundle_verifies_with_the_public_key(
    signer: PolicySigner, bundle: dict[str, Any]
) -> None:
    signature = signer.sign(bundle)
    assert len(base64.b64decode(signature)) == 64
    assert len(base64.b64decode(signer.public_key_b64)) == 32
    assert verify_bundle(signer.public_key_b64, bundle, signature)


def test_one_flipped_byte_anywhere_in_the_bundle_fails(
    signer: PolicySigner, bundle: dict[str, Any]
) -> None:
    data = canonical_json(bundle)
    signature = signer.sign_bytes(data)
    assert verify_bytes(signer.public_key_b64, data, signature)
    # Every position, one bit each: none may slip through.
    for index in range(len(data)):
        tampered = bytearray(data)
        tampered[index] ^= 0x01
        assert not verify_bytes(signer.public_key_b64, bytes(tampered), signature), index


def test_a_changed_rule_or_signature_or_key_fails(
    signer: PolicySigner, bundle: dict[str, Any], tmp_path: Path
) -> None:
    signature = signer.sign(bundle)
    relaxed = {**bundle, "rules": {**bundle["rules"],
                                   "telegram": {**bundle["rules"]["telegram"],
                                                "verdict": "allow"}}}
    assert not verify_bundle(signer.public_key_b64, relaxed, signature)
    raw = bytearray(base64.b64decode(signature))
    raw[0] ^= 0x80
    assert not verify_bundle(signer.public_key_b64, bundle,
                             base64.b64encode(bytes(raw)).decode())
    other = PolicySigner.create(tmp_path / "other.key")
    assert not verify_bundle(other.public_key_b64, bundle, signature)
    assert not verify_bundle(signer.public_key_b64, bundle, "not base64!")
    assert not verify_bundle("AAAA", bundle, signature)


def test_the_key_file_is_private_and_reloads_to_the_same_key(
    signer: PolicySigner, tmp_path: Path, bundle: dict[str, Any]
) -> None:
    path = tmp_path / "policy-signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = PolicySigner.load(path)
    assert again.public_key_b64 == signer.public_key_b64
    assert verify_bundle(signer.public_key_b64, bundle, again.sign(bundle))


def test_create_never_overwrites_an_existing_key(signer: PolicySigner, tmp_path: Path) -> None:
    path = tmp_path / "policy-signing.key"
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        PolicySigner.create(path)
    assert path.read_bytes() == before


def test_load_refuses_missing_garbage_and_non_ed25519_keys(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="cannot read"):
        PolicySigner.load(tmp_path / "absent.key")
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not a key")
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        PolicySigner.load(garbage)
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(SigningKeyError, match="not an Ed25519 key"):
        PolicySigner.load(ec_key)
