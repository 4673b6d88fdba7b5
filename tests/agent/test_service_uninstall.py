"""uninstall-service stops the service and removes exactly what install-service wrote."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.service.install import install_service
from agent.service.render import WindowsHost
from agent.service.uninstall import (
    add_uninstall_service_parser,
    describe_removal,
    plan_uninstall,
    uninstall_service,
)
from agent.settings import load_settings
from tests.agent.test_service import ENV, RecordingRunner

LINUX_EXE = "/usr/local/bin/warden-agent"
WINDOWS_EXE = r"C:\Program Files\Warden\warden-agent.exe"
WINDOWS_HOST = WindowsHost(r"C:\Program Files\Python311\python.exe")


def files_under(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*") if path.is_file()}


def agent_state(directory: Path) -> None:
    """What a running agent leaves in its state directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "identity.json").write_text(json.dumps({"agent_id": "a-123"}))
    for name in ("policy.json", "status.json", "spool.db", "spool.db-wal", "machine-id"):
        (directory / name).write_text("x")


def test_linux_stops_disables_and_removes_the_unit_and_settings(tmp_path: Path) -> None:
    install_service("linux", LINUX_EXE, "/var/lib/warden-agent", ENV, root=tmp_path,
                    runner=RecordingRunner())
    agent_state(tmp_path / "var/lib/warden-agent")
    runner = RecordingRunner()
    plan = plan_uninstall("linux", LINUX_EXE, "/var/lib/warden-agent", purge=False)
    done = uninstall_service("linux", plan, root=tmp_path, runner=runner)
    assert runner.argvs == [["systemctl", "disable", "--now", "warden-agent.service"],
                            ["systemctl", "daemon-reload"]]
    assert "removed /etc/systemd/system/warden-agent.service" in done
    assert "removed /etc/warden/agent.env" in done
    # The token, policy and unsent events stay for a re-install.
    assert files_under(tmp_path) == {f"var/lib/warden-agent/{name}" for name in (
        "identity.json", "policy.json", "status.json", "spool.db", "spool.db-wal",
        "machine-id")}


def test_purge_removes_the_state_directory_too(tmp_path: Path) -> None:
    install_service("macos", LINUX_EXE, "/var/db/warden", ENV, root=tmp_path,
                    runner=RecordingRunner())
    agent_state(tmp_path / "var/db/warden")
    runner = RecordingRunner()
    done = uninstall_service("macos", plan_uninstall("macos", LINUX_EXE, "/var/db/warden",
                                                     purge=True), root=tmp_path, runner=runner)
    assert runner.argvs == [["launchctl", "bootout", "system/com.warden.agent"]]
    assert "removed /Library/Application Support/Warden/enroll-secret" in done
    assert "removed /var/db/warden and everything in it" in done
    assert files_under(tmp_path) == set()


def test_purge_refuses_a_directory_the_agent_does_not_own(tmp_path: Path) -> None:
    system = tmp_path / "var/lib"
    agent_state(system)
    (system / "dpkg").mkdir()
    runner = RecordingRunner()
    with pytest.raises(Exception, match=r"not purging /var/lib: .*\(dpkg\)"):
        uninstall_service("linux", plan_uninstall("linux", LINUX_EXE, "/var/lib", purge=True),
                          root=tmp_path, runner=runner)
    assert (system / "dpkg").is_dir() and (system / "identity.json").exists()


def test_windows_stops_and_deletes_the_service_and_removes_its_host(tmp_path: Path) -> None:
    install_service("windows", WINDOWS_EXE, r"C:\ProgramData\Warden\state", ENV, root=tmp_path,
                    runner=RecordingRunner(), windows_host=WINDOWS_HOST)
    secret = tmp_path / "ProgramData/Warden/enroll-secret"  # the install script writes it
    secret.parent.mkdir(parents=True)
    secret.write_text("s")
    # Not installed as a service: sc.exe fails, and that is fine.
    runner = RecordingRunner(fail={"sc.exe delete WardenAgent"})
    plan = plan_uninstall("windows", WINDOWS_EXE, r"C:\ProgramData\Warden\state", purge=False,
                          windows_config_dir=r"C:\ProgramData\Warden")
    done = uninstall_service("windows", plan, root=tmp_path, runner=runner)
    assert runner.argvs == [
        ["powershell.exe", "-NoProfile", "-NonInteractive", "-Command",
         "Stop-Service -Name WardenAgent -Force -ErrorAction SilentlyContinue"],
        ["sc.exe", "delete", "WardenAgent"]]
    assert "ran sc.exe delete WardenAgent (exit 1, ignored)" in done
    assert files_under(tmp_path) == set()


def test_an_uninstall_of_nothing_changes_nothing(tmp_path: Path) -> None:
    runner = RecordingRunner(fail={"systemctl disable --now warden-agent.service"})
    done = uninstall_service("linux", plan_uninstall("linux", LINUX_EXE, "/var/lib/warden-agent",
                                                     purge=True), root=tmp_path, runner=runner)
    assert not any(line.startswith("removed") for line in done)


def test_dry_run_lists_the_plan_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    agent_state(state)
    parser = argparse.ArgumentParser(prog="warden-agent")
    add_uninstall_service_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["uninstall-service", "--dry-run", "--purge",
                              "--state-dir", str(state)])
    assert args.func(args, load_settings()) == 0
    out = capsys.readouterr().out
    assert f"would remove {state} and everything in it (the agent's state)" in out
    assert "would run systemctl disable --now warden-agent.service" in out
    assert (state / "identity.json").exists()
    assert describe_removal(plan_uninstall("linux", LINUX_EXE, str(state), purge=False)) \
        .count("would remove") == 2
