"""Server test fixtures: a fresh, initialised server per test, on SQLite and PostgreSQL.

Every test that (indirectly) uses `db_url` runs twice: on a SQLite file in
its own tmp_path, and on PostgreSQL in a schema of its own when
WARDEN_TEST_DATABASE_URL is set (skipped, with the reason, otherwise).

Building blocks, each usable alone:
    db_url        database URL for this test (param "sqlite" / "postgresql")
    settings      ServerSettings on a tmp data dir and that database
    initialized   bootstrap.InitResult: migrations, key, admin token, secret, policy v1
    app           create_app(settings)
    client        in-process TestClient (lifespan run, engine disposed after)
    live_server   the same app on a real uvicorn on loopback: its base URL
                  (serve(app, **uvicorn_config) does the same for any app, TLS too)
    admin_token   the first admin API token (str)
    enroll_secret the first enrollment secret (str)
    api_token     factory: api_token("viewer") -> a new token with that role
    make_secret   factory: make_secret(group="finance") -> a new enrollment secret
    host_facts    factory: host_facts(**overrides) -> an enroll request body
    enroll        factory: enroll(machine_id=..., secret=...) -> EnrolledAgent
                  (.agent_id, .token, .headers, .public_key, .group, .facts, .key),
                  signed with the machine's own key as an agent does (the same key
                  for the same machine_id); enroll(signed=False) as an agent from
                  before machine keys. `.signed_facts()`: a fresh signed enroll body
    enrolled_agent one agent enrolled with the first secret
    db            sessionmaker for the app's database: `with db() as session: ...`
                  (write sessions: keep each block short and commit what you change;
                  on SQLite an open one holds the write lock)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import uvicorn
from argon2 import PasswordHasher, profiles
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from agent.host.machine import MachineKey
from server.app import create_app
from server.bootstrap import FILE_MODE, InitResult, initialize, prepare_data_dir
from server.crypto import hashing
from server.settings import ServerSettings
from server.store import enroll_secrets, tokens

PG_ENV = "WARDEN_TEST_DATABASE_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warden.db'}"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"PostgreSQL tests need {PG_ENV}")
    yield from _postgres_schema(base)


def _postgres_schema(base_url: str) -> Iterator[str]:
    """A schema of its own for one test, dropped afterwards: tests never see each other."""
    schema = f"warden_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, poolclass=sa.pool.NullPool)
    try:
        with admin.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    finally:
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, InitResult]:
    """One `warden server init` on SQLite per test session: its data dir, database file and
    result. Tests get copies (a file copy instead of migrations, signing and a policy)."""
    root = tmp_path_factory.mktemp("server-template")
    database = root / "warden.db"
    result = initialize(ServerSettings(data_dir=root / "data",
                                       database_url=f"sqlite:///{database}"))
    return root / "data", database, result


@dataclass(frozen=True)
class PostgresTemplate:
    """One `warden server init` in a schema of its own, as SQL that rebuilds it elsewhere."""

    data_dir: Path
    schema: str
    dump: str
    result: InitResult


@pytest.fixture(scope="session")
def postgres_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresTemplate]:
    base = os.environ.get(PG_ENV)
    if not base or shutil.which("pg_dump") is None:
        pytest.skip("copying an initialised PostgreSQL schema needs pg_dump")
    root = tmp_path_factory.mktemp("server-template-pg")
    for url in _postgres_schema(base):
        result = initialize(ServerSettings(data_dir=root / "data", database_url=url))
        schema = _schema_of(url)
        plain = make_url(base).set(drivername="postgresql").render_as_string(
            hide_password=False)
        dump = subprocess.run(
            ["pg_dump", "--dbname", plain, "--schema", schema, "--inserts", "--no-owner",
             "--no-privileges", "--no-comments"],
            capture_output=True, text=True, check=True, timeout=120).stdout
        # The schema itself is made by each test's db_url; psql's meta-commands (the
        # \restrict lines of newer pg_dump) are for psql, not the server.
        dump = "\n".join(line for line in dump.splitlines() if not line.startswith("\\"))
        dump = dump.replace(f"CREATE SCHEMA {schema};", "")
        yield PostgresTemplate(root / "data", schema, dump, result)


def _schema_of(url: str) -> str:
    options = str(make_url(url).query["options"])
    return options.removeprefix("-csearch_path=")


@pytest.fixture
def initialized(settings: ServerSettings, request: pytest.FixtureRequest) -> InitResult:
    """What `warden server init` makes, copied from a session's one init where the database
    is one a copy can reach (a SQLite file, a schema of db_url's), else made for real."""
    url = make_url(settings.resolved_database_url)
    if url.get_backend_name() == "sqlite" and url.database:
        template_dir, template_db, result = request.getfixturevalue("sqlite_template")
        shutil.copy2(template_db, url.database)
        Path(url.database).chmod(FILE_MODE)
    elif url.get_backend_name() == "postgresql" and "options" in url.query \
            and os.environ.get(PG_ENV) and shutil.which("pg_dump"):
        template: PostgresTemplate = request.getfixturevalue("postgres_template")
        template_dir, result = template.data_dir, template.result
        # psycopg itself: no parameters, so the % in the policy text is not a placeholder.
        plain = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(plain) as connection:  # one transaction, committed at the end
            connection.execute(template.dump.replace(template.schema, _schema_of(str(url))))
    else:
        return initialize(settings)
    # The data dir's files (the signing key), with the modes init gives them.
    data_dir = prepare_data_dir(settings.data_dir)
    for item in template_dir.iterdir():
        shutil.copy2(item, data_dir / item.name)
    return dataclasses.replace(result, data_dir=data_dir,
                               database=url.render_as_string(hide_password=True))


@pytest.fixture
def admin_token(initialized: InitResult) -> str:
    assert initialized.admin_token is not None
    return initialized.admin_token


@pytest.fixture
def enroll_secret(initialized: InitResult) -> str:
    assert initialized.enroll_secret is not None
    return initialized.enroll_secret


@pytest.fixture
def app(settings: ServerSettings, initialized: InitResult) -> Iterator[FastAPI]:
    made = create_app(settings)
    yield made
    # The app's lifespan disposes its engine, but tests that use only its sessions never
    # start it: their pooled PostgreSQL connections would otherwise be closed by the
    # garbage collector, a ResourceWarning in whatever test runs then.
    made.state.context.engine.dispose()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def db(app: FastAPI) -> sessionmaker[Session]:
    factory: sessionmaker[Session] = app.state.context.write_sessions
    return factory


@pytest.fixture
def api_token(db: sessionmaker[Session]) -> Callable[..., str]:
    def make(role: str, name: str | None = None) -> str:
        with db() as session:
            _, token = tokens.create(session, name=name or f"test {role}", role=role,
                                     actor="test")
            session.commit()
        return token

    return make


@pytest.fixture
def make_secret(db: sessionmaker[Session]) -> Callable[..., str]:
    def make(group: str | None = None) -> str:
        with db() as session:
            _, secret = enroll_secrets.create(session, group=group, actor="test")
            session.commit()
        return secret

    return make


@dataclass
class EnrolledAgent:
    agent_id: str
    token: str
    public_key: str
    group: str | None
    facts: dict[str, Any] = field(default_factory=dict)
    # The machine's own key pair (None: enrolled as an agent from before machine keys).
    key: MachineKey | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def signed_facts(self) -> dict[str, Any]:
        """An enroll body for this machine, with a fresh proof by its key."""
        assert self.key is not None, "enrolled unsigned: it has no key to sign with"
        return {**self.facts, **self.key.proof(self.facts["machine_id"])}


def make_host_facts(**overrides: Any) -> dict[str, Any]:
    facts = {"hostname": "desk-01", "machine_id": uuid.uuid4().hex, "os": "linux",
             "os_version": "Debian 12", "arch": "x86_64", "agent_version": "0.1.0",
             "user": "alice"}
    facts.update(overrides)
    return facts


@pytest.fixture
def host_facts() -> Callable[..., dict[str, Any]]:
    """Factory: host_facts(hostname=...) -> an enroll body with a fresh machine id."""
    return make_host_facts


@pytest.fixture
def enroll(client: TestClient, enroll_secret: str) -> Callable[..., EnrolledAgent]:
    keys: dict[str, MachineKey] = {}  # a machine keeps its key, as the agent's state dir does

    def make(secret: str | None = None, signed: bool = True,
             **overrides: Any) -> EnrolledAgent:
        facts = make_host_facts(**overrides)
        key = keys.setdefault(facts["machine_id"], MachineKey.generate()) if signed else None
        body = {**facts, **key.proof(facts["machine_id"])} if key else facts
        response = client.post("/api/v1/agent/enroll", json=body,
                               headers={"Authorization": f"Bearer {secret or enroll_secret}"})
        assert response.status_code == 201, response.text
        answer = response.json()
        return EnrolledAgent(agent_id=answer["agent_id"], token=answer["agent_token"],
                             public_key=answer["policy_public_key"], group=answer["group"],
                             facts=facts, key=key)

    return make


@pytest.fixture
def enrolled_agent(enroll: Callable[..., EnrolledAgent]) -> EnrolledAgent:
    return enroll()


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app on a real uvicorn, on a free loopback port, in a thread."""
    with serve(app) as port:
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def serve(app: FastAPI, **config: Any) -> Iterator[int]:
    """Run `app` on a real uvicorn on loopback (extra uvicorn.Config options, e.g. TLS
    files, in `config`) in a thread until the block ends; yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                           log_level="warning", lifespan="on", **config))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield int(server.servers[0].sockets[0].getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(timeout=20)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 at its cheapest (argon2-cffi's profile for tests) in the app these tests run
    in-process: every user made and every login costs about 0.2 s of CPU at the production
    cost, the most expensive step of many tests' setup. Still argon2id hashes, verified for
    real; the servers the whole-system tests start as processes keep the production cost."""
    monkeypatch.setattr(hashing, "_HASHER", _CHEAP_HASHER)


_CHEAP_HASHER = PasswordHasher.from_parameters(profiles.CHEAPEST)
