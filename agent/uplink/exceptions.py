"""Signed exceptions from the check-in answer: verified, kept, never taken unsigned.

The server signs each agent's `ExceptionsDocument` (policies.exceptions) with the
policy-signing key. The agent takes one only when the signature verifies with the key
it pins for policies, the document says what it is and is for this agent, and it is
not older than the one it holds (a replayed old document must not bring back a
revoked exception). Kept in the state dir, re-verified at every start.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from agent.scanning.exceptions import ExceptionKeeper
from agent.state import Identity, StateDir
from policies.compiler import canonical_json
from policies.exceptions import EXCEPTIONS_PURPOSE, ExceptionsDocument
from policies.private_files import write_private

log = logging.getLogger("warden.agent.exceptions")
FILE_NAME = "exceptions.json"


class ExceptionsRejected(Exception):
    """Unsigned, tampered, for another agent, malformed or older than the one held."""


def verify(signed: Any, public_key: bytes, agent_id: str,
           held: ExceptionsDocument | None = None) -> ExceptionsDocument:
    """The document in `signed` (`{"document", "signature"}`), or ExceptionsRejected."""
    if not isinstance(signed, dict) or not isinstance(signed.get("document"), dict) \
            or not isinstance(signed.get("signature"), str):
        raise ExceptionsRejected("exceptions are not a signed document")
    document = signed["document"]
    try:
        signature = base64.b64decode(signed["signature"], validate=True)
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature,
                                                              canonical_json(document))
    except (InvalidSignature, ValueError, binascii.Error) as exc:
        raise ExceptionsRejected("the exceptions' signature does not verify with the "
                                 "policy key this agent trusts") from exc
    if document.get("purpose") != EXCEPTIONS_PURPOSE:
        raise ExceptionsRejected(f"not an exceptions document (purpose "
                                 f"{document.get('purpose')!r})")
    try:
        parsed = ExceptionsDocument.model_validate(document)
    except ValidationError as exc:
        raise ExceptionsRejected(f"malformed exceptions document: {exc}") from exc
    if parsed.agent_id != agent_id:
        raise ExceptionsRejected(f"the exceptions are for agent {parsed.agent_id}, not for "
                                 f"this one ({agent_id})")
    if held is not None and parsed.issued_at < held.issued_at:
        raise ExceptionsRejected(f"the exceptions were issued at {parsed.issued_at}, before "
                                 f"the ones held ({held.issued_at}): an old copy")
    return parsed


def save(state_dir: Path, signed: dict[str, Any]) -> None:
    write_private(state_dir / FILE_NAME, json.dumps(signed).encode())


def load(state_dir: Path, public_key: bytes, agent_id: str) -> ExceptionsDocument | None:
    """The kept document, verified again (the state dir may have been edited); None when
    there is none or it no longer verifies."""
    path = state_dir / FILE_NAME
    try:
        signed = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.error("cannot read the kept exceptions %s: %s; none apply", path, exc)
        return None
    try:
        return verify(signed, public_key, agent_id)
    except ExceptionsRejected as exc:
        log.error("the kept exceptions %s are refused: %s; none apply", path, exc)
        return None


def load_kept(state: StateDir) -> ExceptionsDocument | None:
    """What the agent held when it stopped, if it still verifies; None before enrollment."""
    identity = state.load_identity()
    if identity is None:
        return None
    return load(state.path, identity.policy_public_key, identity.agent_id)


def take(signed: Any, identity: Identity, state: StateDir, keeper: ExceptionKeeper,
         status: dict[str, Any]) -> None:
    """From the sync thread: a check-in's signed exceptions, to `keeper` if they verify.
    A refusal keeps the ones held and says why in `status` (reported at check-in)."""
    try:
        document = verify(signed, identity.policy_public_key, identity.agent_id,
                          keeper.document)
    except ExceptionsRejected as exc:
        log.error("refused the server's exceptions: %s; keeping the ones held", exc)
        status["exceptions_error"] = str(exc)
        return
    status.pop("exceptions_error", None)
    try:
        save(state.path, signed)
    except OSError as exc:
        log.error("honouring the server's exceptions, but cannot save them: %s", exc)
    keeper.take(document)
