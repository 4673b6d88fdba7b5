"""Who this machine is: its id, the facts it enrolls with, and its own key pair.

The key pair is the proof of possession behind re-enrollment (docs/api.md,
"Proof of possession"). It is made once, the first time the agent enrolls or
checks in, and kept in the state dir (`machine-key.pem`, 0600, written
atomically like identity.json); the server binds its public key to the agent.
A later enrollment of the same `machine_id` is accepted only with a fresh
statement signed by that key, or after an administrator approved it — so an
enrollment secret plus another machine's id (which every viewer sees) no longer
takes that machine over. The statement is

    {"purpose": "warden.agent-enrollment", "machine_id", "public_key", "signed_at"}

as canonical JSON, signed with Ed25519 by the key it names; the server takes
it only within a few minutes of its own clock and only once (each accepted
`signed_at` must be later than the last one).
"""

from __future__ import annotations

import datetime as dt
import getpass
import importlib.metadata
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.host.platform import hostname
from agent.state import StateDir
from agent.uplink.trust import key_b64
from policies.compiler import canonical_json
from policies.private_files import write_private
from policies.vocabulary import OsName

# What the statement says it is (server/crypto/enrollment_proof.py checks the same words).
ENROLLMENT_PURPOSE = "warden.agent-enrollment"
KEY_FILE = "machine-key.pem"


class MachineKeyError(Exception):
    """The machine key file exists but cannot be used (a damaged or foreign file)."""


def agent_version() -> str:
    try:
        return importlib.metadata.version("warden")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def machine_id(state: StateDir) -> str:
    """A stable id for this machine: the OS's own where it has one, else one we keep."""
    for candidate in (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id")):
        try:
            value = candidate.read_text(encoding="ascii").strip()
        except OSError:
            continue
        if value:
            return value
    path = state.path / "machine-id"
    if not path.exists():
        path.write_text(str(uuid.uuid4()), encoding="ascii")
    return path.read_text(encoding="ascii").strip()


def host_facts(state: StateDir, os_name: OsName) -> dict[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = ""
    return {
        "hostname": hostname(),
        "machine_id": machine_id(state),
        "os": os_name,
        "os_version": platform.release(),
        "arch": platform.machine(),
        "agent_version": agent_version(),
        "user": user,
    }


def enrollment_statement(machine: str, public_key: str, signed_at: str) -> dict[str, str]:
    return {"purpose": ENROLLMENT_PURPOSE, "machine_id": machine, "public_key": public_key,
            "signed_at": signed_at}


@dataclass(frozen=True)
class MachineKey:
    private_key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> MachineKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, state: StateDir) -> MachineKey:
        """The key in the state dir, made (and saved) on first use."""
        path = state.path / KEY_FILE
        if not path.exists():
            key = cls.generate()
            write_private(path, key.private_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
            return key
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except ValueError as exc:
            raise MachineKeyError(f"{path} is not a PEM private key ({exc}); move it aside "
                                  "and the agent makes a new one, whose re-enrollment an "
                                  "administrator then approves") from exc
        if not isinstance(loaded, Ed25519PrivateKey):
            raise MachineKeyError(f"{path} holds a {type(loaded).__name__}, not an Ed25519 "
                                  "key; move it aside and the agent makes a new one")
        return cls(loaded)

    @property
    def public_key(self) -> str:
        """The raw 32-byte public key, base64: what the server binds to the agent."""
        return key_b64(self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def proof(self, machine: str, now: dt.datetime | None = None) -> dict[str, object]:
        """What an enrollment request adds to the host facts: `public_key` and `proof`."""
        signed_at = (now or dt.datetime.now(dt.UTC)).isoformat()
        statement = enrollment_statement(machine, self.public_key, signed_at)
        signature = self.private_key.sign(canonical_json(statement))
        return {"public_key": self.public_key,
                "proof": {"signed_at": signed_at, "signature": key_b64(signature)}}
