"""`warden users create|list|disable|enable` on a real data directory, then a real login."""

from __future__ import annotations

import argparse
import io
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.bootstrap import InitResult
from server.cli import user_commands
from server.models import AuditEntry, User
from server.settings import ServerSettings
from tests.server.dashboard_support import log_in_with_password, new_browser

PASSWORD = "a long enough password"


@pytest.fixture
def run(settings: ServerSettings, initialized: InitResult,
        monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """`run("create", "--username", ...)` on this test's data directory and database."""
    monkeypatch.setenv("WARDEN_DATABASE_URL", settings.resolved_database_url)

    def invoke(*argv: str, stdin: str = "") -> int:
        parser = argparse.ArgumentParser(prog="warden")
        user_commands.register(parser.add_subparsers(dest="area", required=True))
        args = parser.parse_args(["users", *argv, "--data-dir", str(settings.data_dir)])
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        result: int = args.func(args)
        return result

    return invoke


def test_create_from_a_password_file_then_log_in_to_the_dashboard(
    run: Callable[..., int], tmp_path: Path, app: FastAPI, client: TestClient,
    db: sessionmaker[Session], capsys: pytest.CaptureFixture[str],
) -> None:
    secret = tmp_path / "password"
    secret.write_text(PASSWORD + "\n")
    assert run("create", "--username", "frank", "--role", "analyst",
               "--password-file", str(secret)) == 0
    assert "Created analyst 'frank'" in capsys.readouterr().out
    with db() as session:
        user = session.scalars(sa.select(User).where(User.username == "frank")).one()
        entry = session.scalars(sa.select(AuditEntry)
                                .where(AuditEntry.action == "user.create")).one()
    assert user.role == "analyst" and PASSWORD not in user.password_hash
    assert user.password_hash.startswith("$argon2")
    assert entry.actor.startswith("cli:")
    browser = new_browser(app)
    assert log_in_with_password(browser, "frank", PASSWORD).status_code == 303
    assert "analyst" in browser.get("/").text


def test_create_reads_a_line_of_stdin_and_refuses_duplicates_and_short_passwords(
    run: Callable[..., int], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("create", "--username", "gina", "--role", "viewer", stdin=PASSWORD + "\n") == 0
    assert run("create", "--username", "gina", "--role", "admin", stdin=PASSWORD + "\n") == 1
    assert "already a user named 'gina'" in capsys.readouterr().err
    assert run("create", "--username", "hal", "--role", "viewer", stdin="short\n") == 2
    assert "at least 12 characters" in capsys.readouterr().err
    assert run("list") == 0
    listing = capsys.readouterr().out
    assert "gina" in listing and "viewer" in listing and "hal" not in listing


def test_disable_ends_logins_and_enable_restores_them(
    run: Callable[..., int], app: FastAPI, client: TestClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run("create", "--username", "ivy", "--role", "admin", stdin=PASSWORD) == 0
    assert run("disable", "--username", "ivy") == 0
    assert log_in_with_password(new_browser(app), "ivy", PASSWORD).status_code == 401
    assert run("enable", "--username", "ivy") == 0
    assert log_in_with_password(new_browser(app), "ivy", PASSWORD).status_code == 303
    assert run("disable", "--username", "nobody") == 1
    assert "no user named 'nobody'" in capsys.readouterr().err


def test_a_terminal_is_asked_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    answers = iter([PASSWORD, PASSWORD])
    assert user_commands.read_password(None, Terminal(), ask=lambda _: next(answers)) == PASSWORD
    different = iter([PASSWORD, PASSWORD + "!"])
    with pytest.raises(ValueError, match="differ"):
        user_commands.read_password(None, Terminal(), ask=lambda _: next(different))


def test_an_uninitialised_data_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="warden")
    user_commands.register(parser.add_subparsers(dest="area", required=True))
    args = parser.parse_args(["users", "list", "--data-dir", str(tmp_path / "empty")])
    assert args.func(args) == 1
    assert "is not initialised" in capsys.readouterr().err
