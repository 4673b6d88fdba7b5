"""`warden connectors …` as an administrator runs it: the real CLI process, the real server
on loopback, a stand-in of the MDM's API (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from server.settings import ServerSettings
from tests.server.mdm_standins import (
    CLIENT_ID,
    CLIENT_SECRET,
    TENANT,
    App,
    Device,
    StandIn,
    running,
)

WARDEN = Path(sys.executable).with_name("warden")
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def warden(live_server: str, admin_token: str, tmp_path: Path) -> Run:
    if not WARDEN.exists():
        pytest.skip(f"the warden console script is not installed beside {sys.executable}")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("WARDEN_")}
    env.update(WARDEN_URL=live_server, WARDEN_TOKEN=admin_token,
               XDG_CONFIG_HOME=str(tmp_path / "config"))

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(WARDEN), *argv], env=env, capture_output=True, text=True,
                              timeout=120, check=False)

    return run


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    # The server's own periodic syncs stay out of the way of the ones a test asks for.
    return ServerSettings(data_dir=tmp_path / "data", database_url=db_url,
                          connector_poll_seconds=3600)


@pytest.fixture
def standin() -> Iterator[StandIn]:
    with running(StandIn(page_size=3)) as server:
        server.devices = [
            Device("d1", "alice-iphone", "iOS",
                   apps=[App("Telegram", None, "Telegram FZ-LLC", "11.0")]),
            Device("d2", "bob-pixel", "Android", model="Pixel 8",
                   apps=[App("Plus Messenger", None, "", "10.0")]),
            Device("d3", "carol-iphone", "iOS", apps=[App("Signal", None, "Signal")]),
        ]
        yield server


# Seven CLI processes: about a minute and a half on a loaded machine.
@pytest.mark.slow
def test_add_list_show_sync_and_remove_an_intune_connector(
        warden: Run, standin: StandIn, tmp_path: Path, live_server: str) -> None:
    secret_file = tmp_path / "intune.secret"
    secret_file.write_text(CLIENT_SECRET + "\n")
    secret_file.chmod(0o600)
    added = warden("connectors", "add", "intune", "corp", "--tenant-id", TENANT,
                   "--client-id", CLIENT_ID, "--client-secret-file", str(secret_file),
                   "--graph-url", standin.url, "--login-url", standin.url,
                   "--interval-minutes", "30", "--group", "phones")
    assert added.returncode == 0, added.stderr
    assert "intune:corp" in added.stdout

    synced = warden("connectors", "sync", "corp", "--json")
    assert synced.returncode == 0, synced.stderr
    counts = json.loads(synced.stdout)
    assert {key: counts[key] for key in ("devices", "apps", "findings_opened",
                                         "findings_resolved")} == {
        "devices": 3, "apps": 3, "findings_opened": 2, "findings_resolved": 0}

    listing = warden("connectors", "list")
    assert listing.returncode == 0 and "corp" in listing.stdout and "ok" in listing.stdout
    shown = warden("connectors", "show", "corp", "--json")
    record = json.loads(shown.stdout)
    assert record["last_result"] == "ok" and record["group"] == "phones"
    assert record["interval_minutes"] == 30 and record["hosts"] == 3

    # Wrong credentials: the sync fails, says why, and `show` keeps the reason.
    standin.faults.refuse_credentials = True
    standin.valid_tokens.clear()
    failed = warden("connectors", "sync", "corp")
    assert failed.returncode == 1 and "refused the credentials" in failed.stderr
    shown = warden("connectors", "show", "corp")
    assert "failed" in shown.stdout and "refused the credentials" in shown.stdout

    findings = warden("findings", "list", "--sensor", "mdm", "--json")
    assert {f["host"] for f in json.loads(findings.stdout)["items"]} == {
        "alice-iphone", "bob-pixel"}

    for result in (added, synced, listing, shown, failed, findings):
        assert CLIENT_SECRET not in result.stdout + result.stderr

    removed = warden("connectors", "remove", "corp")
    assert removed.returncode == 0 and "retired" in removed.stdout
    gone = warden("connectors", "show", "corp")
    assert gone.returncode == 1 and "no connector" in gone.stderr


def test_a_missing_secret_file_is_a_clear_error_that_adds_nothing(
        warden: Run, tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    result = warden("connectors", "add", "android", "fleet", "--enterprise", "LC01",
                    "--service-account-file", str(missing))
    assert result.returncode == 2 and str(missing) in result.stderr
    assert "no connector" in warden("connectors", "list").stderr
