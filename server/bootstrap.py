"""First-time setup of a data directory: what `warden server init` does.

Idempotent by construction: the database part runs in one transaction that
first locks the server_state row, and does nothing if a policy is already
active. So a second (or a concurrent) init changes nothing and reveals no
secret; the secrets exist in clear only in the first run's result.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from policies.loader import default_policy_path, load_catalog
from server import db
from server.crypto.signing import PolicySigner
from server.models import ServerState
from server.settings import ServerSettings
from server.store import enroll_secrets, policies, tokens

DATA_DIR_MODE = 0o700
FILE_MODE = 0o600
INIT_ACTOR = "warden server init"


class InitError(Exception):
    """The data directory is in a state init must not paper over."""


@dataclass(frozen=True)
class InitResult:
    initialized: bool  # False: it already was, and nothing changed
    data_dir: Path
    database: str  # the URL, password hidden
    policy_version: int | None
    admin_token: str | None = None
    enroll_secret: str | None = None

    def as_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "initialized": self.initialized,
            "data_dir": str(self.data_dir),
            "database": self.database,
            "policy_version": self.policy_version,
        }
        if self.initialized:
            data["admin_token"] = self.admin_token
            data["enroll_secret"] = self.enroll_secret
        return data


def initialize(settings: ServerSettings) -> InitResult:
    data_dir = prepare_data_dir(settings.data_dir)
    engine = db.create_engine(settings.resolved_database_url)
    try:
        db.run_migrations(engine)
        result = _initialize_database(settings, engine, data_dir)
    finally:
        engine.dispose()
    if engine.url.get_backend_name() == "sqlite" and engine.url.database:
        # SQLite creates its -wal and -shm files with the database file's mode.
        Path(engine.url.database).chmod(FILE_MODE)
    return result


def prepare_data_dir(data_dir: Path) -> Path:
    data_dir = data_dir.expanduser().absolute()
    data_dir.mkdir(mode=DATA_DIR_MODE, parents=True, exist_ok=True)
    # It holds the signing key and, by default, the database: owner only, even if it existed.
    os.chmod(data_dir, DATA_DIR_MODE)
    return data_dir


def _initialize_database(settings: ServerSettings, engine: Engine, data_dir: Path) -> InitResult:
    key_path = settings.signing_key_path
    database = engine.url.render_as_string(hide_password=True)
    with db.session_factory(db.writer(engine))() as session:
        state = session.get(ServerState, 1, with_for_update=True)
        assert state is not None  # created by the first migration
        if state.active_policy_number is not None:
            if not key_path.exists():
                raise InitError(
                    f"the database is initialised but the policy-signing key {key_path} is "
                    "missing: restore it from a backup (a new key would make every agent "
                    "reject new policies)")
            return InitResult(initialized=False, data_dir=data_dir, database=database,
                              policy_version=state.active_policy_number)
        signer = _signer(key_path)
        _, admin_token = tokens.create(session, name="initial admin", role="admin",
                                       actor=INIT_ACTOR)
        _, enroll_secret = enroll_secrets.create(session, group=None, actor=INIT_ACTOR)
        policy_path = default_policy_path()
        version = policies.add_version(
            session, text=policy_path.read_text(encoding="utf-8"), source_name=policy_path.name,
            catalog=load_catalog(), signer=signer, actor=INIT_ACTOR)
        policies.activate(session, version.number, INIT_ACTOR, signer)
        session.commit()
        return InitResult(initialized=True, data_dir=data_dir, database=database,
                          policy_version=version.number, admin_token=admin_token,
                          enroll_secret=enroll_secret)


def _signer(key_path: Path) -> PolicySigner:
    # A key left by an init that failed later (or by a restore) is kept, never replaced.
    if key_path.exists():
        return PolicySigner.load(key_path)
    try:
        return PolicySigner.create(key_path)
    except FileExistsError:
        return PolicySigner.load(key_path)
