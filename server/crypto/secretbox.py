"""Connector secrets encrypted at rest: Fernet with a key file in the data directory.

The database holds only ciphertext, so a database dump or a PostgreSQL replica
does not give away an MDM's client secret; the key stays beside the policy
signing key, mode 0600. The key is made on first use; servers sharing one
database must share it (copy the data directory, as for the signing key).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE_NAME = "connector-secrets.key"
KEY_FILE_MODE = 0o600


class SecretBoxError(Exception):
    """The key file is missing, unreadable or not the key the secret was sealed with."""


class SecretBox:
    def __init__(self, key_path: Path) -> None:
        self._path = key_path
        self._fernet: Fernet | None = None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> SecretBox:
        return cls(data_dir / KEY_FILE_NAME)

    def seal(self, secret: str) -> str:
        return self._key().encrypt(secret.encode()).decode("ascii")

    def open(self, sealed: str) -> str:
        try:
            return self._key().decrypt(sealed.encode("ascii")).decode()
        except (InvalidToken, ValueError) as exc:
            raise SecretBoxError(
                f"the connector's secret cannot be decrypted with {self._path}: the key file "
                "changed since it was stored (servers sharing a database need the same key "
                "file); store the secret again with `warden connectors add`") from exc

    def _key(self) -> Fernet:
        if self._fernet is None:
            self._fernet = Fernet(self._load_or_create())
        return self._fernet

    def _load_or_create(self) -> bytes:
        try:
            # O_EXCL: of two processes starting together, one writes the key, both read it.
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        except FileExistsError:
            return self._read()
        except OSError as exc:
            raise SecretBoxError(f"cannot create the connector key {self._path}: {exc}") from exc
        key = Fernet.generate_key()
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key

    def _read(self) -> bytes:
        try:
            key = self._path.read_bytes().strip()
        except OSError as exc:
            raise SecretBoxError(f"cannot read the connector key {self._path}: {exc}") from exc
        if not key:
            # Another process created it a moment ago and is still writing.
            raise SecretBoxError(f"the connector key {self._path} is empty; try again")
        return key
