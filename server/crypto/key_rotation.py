"""`warden server rotate-key` and `public-key`: the signing key's files and its rotations.

A rotation, in the order that keeps every crash recoverable:

1. keep the old key as `policy-signing.<fingerprint>.key` (if not kept already);
2. write the new key as `policy-signing.<fingerprint>.key` (new file, 0600);
3. one database transaction: the old key signs a statement naming the new one;
   the new key re-signs the stored bundles and a new activation (server.store.policies);
4. replace `policy-signing.key` with the new key (os.replace).

A crash before 3 leaves an unused key file and nothing changed. A crash between
3 and 4 leaves the database ahead of the file: `finish_rotation` (run by
`warden server run` and by the next `rotate-key`) notices that the file holds a
retired key and installs the current one from step 2. Running servers pick up
the replaced file by themselves (server.crypto.signing.PolicySigner).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from server.crypto.signing import PolicySigner, SigningKeyError, fingerprint, retired_keys
from server.store import policies


def kept_key_path(key_path: Path, public_key_b64: str) -> Path:
    """Where a key is kept by its fingerprint, next to the current key file."""
    stem = key_path.name.removesuffix(".key")
    return key_path.with_name(f"{stem}.{fingerprint(public_key_b64)}.key")


def keep(signer: PolicySigner, key_path: Path) -> Path:
    path = kept_key_path(key_path, signer.public_key_b64)
    with contextlib.suppress(FileExistsError):  # kept already, by a rotation that stopped
        signer.write(path)
    return path


@dataclass(frozen=True)
class KeyState:
    """The key file as the database sees it."""

    public_key: str  # what policy-signing.key holds
    rotations: list[dict[str, Any]]

    @property
    def current(self) -> str:
        """The key agents are told to move to: the last rotation's, else the file's."""
        return self.rotations[-1]["statement"]["public_key"] if self.rotations \
            else self.public_key

    @property
    def retired(self) -> bool:
        return self.public_key in retired_keys(self.rotations)

    def as_dict(self) -> dict[str, Any]:
        """What `warden server public-key --json` prints: the key agents should trust."""
        return {"public_key": self.current, "fingerprint": fingerprint(self.current),
                "rotations": [item["statement"] for item in self.rotations]}


def key_state(session: Session, key_path: Path) -> KeyState:
    return KeyState(PolicySigner.load(key_path).public_key_b64,
                    policies.key_rotations(session))


def finish_rotation(session: Session, key_path: Path) -> str | None:
    """Install the current key if `key_path` still holds one a rotation retired (a rotation
    that stopped before its last step); what was done, or None. SigningKeyError when the
    current key is not here to install (another host's copy of the data directory)."""
    state = key_state(session, key_path)
    if not state.retired:
        return None
    kept = kept_key_path(key_path, state.current)
    try:
        current = PolicySigner.load(kept)
    except SigningKeyError as exc:
        raise SigningKeyError(
            f"{key_path} holds a key a rotation retired ({fingerprint(state.public_key)}), "
            f"and the current key ({fingerprint(state.current)}) is not in {kept.parent}: "
            "copy policy-signing.key from the host where `warden server rotate-key` ran"
        ) from exc
    if current.public_key_b64 != state.current:
        raise SigningKeyError(f"{kept} does not hold the key its name says")
    current.install(key_path)
    return (f"finished an interrupted key rotation: {key_path} now holds key "
            f"{fingerprint(state.current)}")


@dataclass(frozen=True)
class RotationReport:
    rotation: policies.Rotation
    kept_old: Path
    kept_new: Path
    finished: str | None  # an earlier, interrupted rotation completed first

    def as_dict(self) -> dict[str, Any]:
        rotation = self.rotation
        return {"previous_public_key": rotation.previous_public_key,
                "previous_fingerprint": fingerprint(rotation.previous_public_key),
                "public_key": rotation.public_key,
                "fingerprint": fingerprint(rotation.public_key),
                "activation_serial": rotation.activation_serial,
                "resigned_versions": rotation.resigned,
                "not_resigned_versions": rotation.not_resigned,
                "kept_keys": [str(self.kept_old), str(self.kept_new)],
                "finished_interrupted_rotation": self.finished}


def rotate(session: Session, key_path: Path, actor: str) -> RotationReport:
    """Steps 1-4 above; commits the session. SigningKeyError when the key file is unusable."""
    finished = finish_rotation(session, key_path)
    session.commit()  # end the read: step 3 takes the server_state lock from the start
    old = PolicySigner.load(key_path, follow=False)
    kept_old = keep(old, key_path)
    new = PolicySigner.generate()
    kept_new = keep(new, key_path)
    rotation = policies.rotate_signing_key(session, old, new, actor)
    session.commit()
    new.install(key_path)
    return RotationReport(rotation, kept_old, kept_new, finished)
