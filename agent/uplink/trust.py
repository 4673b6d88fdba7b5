"""Which policy-signing key the agent trusts, and how that trust moves with a key rotation.

The agent trusts one key at a time: the one pinned in `identity.json`, taken at
enrollment — from the `policy_public_key` setting when it is set, otherwise from
the enrollment answer (trust on first use). It moves only along the server's
signed rotation statements: `{"purpose": "warden.policy-key-rotation",
"previous_public_key", "public_key", "created_at"}`, each signed by the key it
retires. A statement that names another key than the trusted one is none of
this agent's business (it is from before its key, or from another chain) and is
passed over; one that names the trusted key must verify with it, or the whole
answer is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from policies.compiler import canonical_json

# What the server's signed rotation statement says it is (server/crypto/signing.py).
ROTATION_PURPOSE = "warden.policy-key-rotation"


class UntrustedKey(Exception):
    """A key rotation statement or a server's key is not one the agent can trust."""


def key_b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def key_path(trusted: bytes, rotations: Sequence[Any]) -> list[bytes]:
    """`trusted`, then every key the statements lead to from it, in order.

    `rotations` is the server's list, oldest first: `[{"statement", "signature"}]`.
    UntrustedKey when one that names a key on the path does not verify with it, is not a
    rotation statement, or is malformed.
    """
    if not isinstance(rotations, list | tuple):
        raise UntrustedKey("key rotations are not a list")
    path = [trusted]
    for index, item in enumerate(rotations, start=1):
        statement, signature, previous, new = _parts(item, index)
        if previous != path[-1]:
            continue  # signed by a key this agent does not trust: not its chain
        try:
            Ed25519PublicKey.from_public_bytes(previous).verify(signature,
                                                                canonical_json(statement))
        except (InvalidSignature, ValueError) as exc:
            raise UntrustedKey(f"key rotation {index} does not verify with the key it names "
                               f"({key_b64(previous)}), the one this agent trusts") from exc
        if statement.get("purpose") != ROTATION_PURPOSE:
            raise UntrustedKey(f"key rotation {index} is not a rotation statement "
                               f"(purpose {statement.get('purpose')!r})")
        path.append(new)
    return path


def follow(trusted: bytes, rotations: Sequence[Any]) -> bytes:
    """The key to verify with now: where the rotations lead from `trusted`."""
    return key_path(trusted, rotations)[-1]


def _parts(item: Any, index: int) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    try:
        statement, signature = item["statement"], item["signature"]
        if not isinstance(statement, dict):
            raise TypeError("the statement is not an object")
        previous, new = statement["previous_public_key"], statement["public_key"]
        if not all(isinstance(value, str) for value in (signature, previous, new)):
            raise TypeError("keys and signature must be text")
        raw_signature, raw_previous, raw_new = (base64.b64decode(value, validate=True)
                                                for value in (signature, previous, new))
    except (KeyError, TypeError, binascii.Error) as exc:
        raise UntrustedKey(f"key rotation {index} is malformed: {exc!r}") from exc
    if len(raw_previous) != 32 or len(raw_new) != 32:
        raise UntrustedKey(f"key rotation {index} names a key that is not 32 bytes")
    return statement, raw_signature, raw_previous, raw_new
