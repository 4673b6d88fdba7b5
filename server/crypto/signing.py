"""The policy-signing key: Ed25519, one PEM file in the data directory (0600).

The key never enters the database: a database dump or a read-only SQL
injection must not be enough to sign a policy that every agent would obey.
Agents verify `signature` over `policies.compiler.canonical_json(bundle)` with
the raw public key they pinned at enrollment.

Rotation (server.crypto.key_rotation) replaces the key file with a new key; the old
key signs a rotation statement naming the new one, so an agent that pins the
old key can move on without trusting anyone new. Every key ever used is kept
as `policy-signing.<fingerprint>.key` next to the current one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from policies.compiler import canonical_json
from policies.private_files import write_private

KEY_FILE_MODE = 0o600
# What a signed rotation statement says it is, so it can never pass for a bundle or an
# activation signed with the same key. agent/uplink/trust.py checks the same string.
ROTATION_PURPOSE = "warden.policy-key-rotation"


class SigningKeyError(Exception):
    """The key file is missing, unreadable, not an Ed25519 private key, or retired."""


class PolicySigner:
    """Signs with the key in a file; loaded from a path, it follows that file.

    `warden server rotate-key` replaces the file (atomically, os.replace) while
    servers may be running: each use looks at the file's identity (one stat)
    and loads the new key when it changed, so a running server signs with the
    new key from its next activation on, and tells agents about it at their next
    check-in, without a restart.
    """

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._set(private_key, _stamp(path) if path else None)

    def _set(self, key: Ed25519PrivateKey, stamp: tuple[int, ...] | None) -> None:
        self._private_key = key
        self._public_key_b64 = public_key_to_b64(key.public_key())
        self._stamp = stamp

    @classmethod
    def load(cls, path: Path, follow: bool = True) -> PolicySigner:
        """The key in `path`; with `follow=False` that key for good, whatever the file
        holds later (a rotation must not find its old key changed under it)."""
        return cls(_read_key(path), path if follow else None)

    @classmethod
    def generate(cls) -> PolicySigner:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def create(cls, path: Path) -> PolicySigner:
        """Write a new key; refuse to overwrite one (agents trust the old public key)."""
        key = Ed25519PrivateKey.generate()
        cls(key).write(path)
        return cls(key, path)

    def write(self, path: Path) -> None:
        """Save the key to a new file (FileExistsError if there is one), 0600 from the start."""
        # O_EXCL + mode at creation: the key is never readable by others, not even briefly.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self._pem())
            handle.flush()
            os.fsync(handle.fileno())

    def install(self, path: Path) -> None:
        """Replace `path` with this key in one step: a reader sees the old key or the new."""
        write_private(path, self._pem())

    def _pem(self) -> bytes:
        return self._current().private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.NoEncryption(),
        )

    def _current(self) -> Ed25519PrivateKey:
        if self._path is not None:
            stamp = _stamp(self._path)
            if stamp != self._stamp:
                with self._lock:
                    if stamp != self._stamp:
                        self._reload(stamp)
        return self._private_key

    def _reload(self, stamp: tuple[int, ...] | None) -> None:
        assert self._path is not None
        try:
            key = _read_key(self._path)
        except SigningKeyError:
            # Gone or unreadable (a restore in progress, a wrong copy): keep signing with the
            # key already loaded rather than failing every request; the next use looks again.
            return
        self._set(key, stamp)

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._current().public_key()

    @property
    def public_key_b64(self) -> str:
        self._current()
        return self._public_key_b64

    def sign(self, document: dict[str, Any]) -> str:
        return self.sign_bytes(canonical_json(document))

    def sign_bytes(self, data: bytes) -> str:
        return base64.b64encode(self._current().sign(data)).decode("ascii")


def _read_key(path: Path) -> Ed25519PrivateKey:
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
    return key


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What changes when the file is replaced or rewritten; None while it is missing."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def public_key_to_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(encoding=serialization.Encoding.Raw,
                           format=serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def fingerprint(public_key_b64: str) -> str:
    """A short name for a public key, for file names and messages: SHA-256 of the raw key."""
    return hashlib.sha256(base64.b64decode(public_key_b64)).hexdigest()[:16]


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


def rotation_statement(old: PolicySigner, new_public_key_b64: str,
                       created_at: str) -> dict[str, Any]:
    """`{"statement", "signature"}`: the old key's signed word that the new key follows it.

    The statement names the key that signed it (`previous_public_key`), so an agent
    finds where its own key enters a chain of rotations without trying every signature.
    """
    statement = {"purpose": ROTATION_PURPOSE, "previous_public_key": old.public_key_b64,
                 "public_key": new_public_key_b64, "created_at": created_at}
    return {"statement": statement, "signature": old.sign(statement)}


def retired_keys(rotations: list[dict[str, Any]]) -> set[str]:
    """The public keys a rotation moved away from: nothing may be signed with them again."""
    return {item["statement"]["previous_public_key"] for item in rotations}
