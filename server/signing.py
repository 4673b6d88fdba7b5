"""The policy-signing key: Ed25519, one PEM file in the data directory (0600).

The key never enters the database: a database dump or a read-only SQL
injection must not be enough to sign a policy that every agent would obey.
Agents verify `signature` over `policies.compiler.canonical_json(bundle)` with
the raw public key they received at enrollment.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from policies.compiler import canonical_json

KEY_FILE_MODE = 0o600


class SigningKeyError(Exception):
    """The key file is missing, unreadable or not an Ed25519 private key."""


class PolicySigner:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key

    @classmethod
    def load(cls, path: Path) -> PolicySigner:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise SigningKeyError(f"cannot read the policy-signing key {path}: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise SigningKeyError(f"{path} is not a PEM private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @classmethod
    def create(cls, path: Path) -> PolicySigner:
        """Write a new key; refuse to overwrite one (agents trust the old public key)."""
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )
        # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return cls(key)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._private_key.public_key()

    @property
    def public_key_b64(self) -> str:
        return public_key_to_b64(self.public_key)

    def sign(self, bundle: dict[str, Any]) -> str:
        return self.sign_bytes(canonical_json(bundle))

    def sign_bytes(self, data: bytes) -> str:
        return base64.b64encode(self._private_key.sign(data)).decode("ascii")


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(encoding=serialization.Encoding.Raw,
                           format=serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def verify_bytes(public_key_b64: str, data: bytes, signature_b64: str) -> bool:
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        key.verify(base64.b64decode(signature_b64, validate=True), data)
    except (InvalidSignature, ValueError):
        return False
    return True


def verify_bundle(public_key_b64: str, bundle: dict[str, Any], signature_b64: str) -> bool:
    """What an agent does before trusting a bundle (also used by tests and the CLI)."""
    return verify_bytes(public_key_b64, canonical_json(bundle), signature_b64)
