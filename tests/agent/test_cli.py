"""`warden-agent scan` and `watch` as a user runs them: real subprocesses, real processes."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from agent.cli import build_parser, main
from tests.unprivileged import Unprivileged

NOTHING_POLICY = """
name: nothing-here
apps:
  - id: ghost
    name: Ghost
    signatures:
      process:
        names: [warden-test-no-such-process-ever]
rules:
  - app: ghost
    verdict: deny
"""

SENSOR_FLAGS = ("--no-installed", "--no-network")


def test_scan_json_reports_a_running_telegram_and_exits_3(agent: Any, fakes: Any) -> None:
    process = fakes.start("telegram-desktop")
    result = agent("scan", "--once", "--json", *SENSOR_FLAGS)
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == {"findings", "warnings", "policy_version", "sensors"}
    assert len(report["policy_version"]) == 64
    assert report["sensors"]["process"]["state"] == "ok"
    assert set(report["sensors"]) == {"process"}
    (finding,) = [f for f in report["findings"] if f.get("pid") == process.pid]
    assert finding["app"] == "telegram"
    assert finding["verdict"] == "deny"
    assert finding["action"] == "notify"
    assert finding["sensor"] == "process"
    assert finding["alternative"] == "signal"
    assert finding["confidence"] == "medium"
    assert finding["evidence"]["exe"].endswith("/telegram-desktop")
    assert finding["evidence"]["pid"] == process.pid


def test_scan_without_denied_apps_exits_0(agent: Any, tmp_path: Path) -> None:
    policy = tmp_path / "nothing.yaml"
    policy.write_text(NOTHING_POLICY)
    result = agent("scan", "--once", "--json", "--policy", str(policy), *SENSOR_FLAGS)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["findings"] == []


def test_scan_table_names_the_app_and_the_alternative(agent: Any, fakes: Any) -> None:
    process = fakes.start("ayugram-desktop")
    result = agent("scan", *SENSOR_FLAGS)
    assert result.returncode == 3
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["APP", "VERDICT", "ACTION", "SENSOR", "CONFIDENCE", "EVIDENCE"]
    (row,) = [r for r in rows if f"pid {process.pid} " in r]
    assert row.split()[:5] == ["Telegram", "deny", "notify", "process", "medium"]
    assert "Use Signal instead: https://signal.org/download/" in result.stdout


def test_clean_table(agent: Any, tmp_path: Path) -> None:
    policy = tmp_path / "nothing.yaml"
    policy.write_text(NOTHING_POLICY)
    result = agent("scan", "--policy", str(policy), *SENSOR_FLAGS)
    assert (result.returncode, result.stdout.strip()) == (0, "No banned or flagged apps found.")


def test_bad_policy_exits_1_with_file_line_and_field(agent: Any, tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text("name: bad\nrules:\n  - app: telegram\n    verdict: forbid\n")
    result = agent("scan", "--once", "--json", "--policy", str(policy), *SENSOR_FLAGS)
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"{policy}:4: rules[0].verdict" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_policy_file_exits_1(agent: Any, tmp_path: Path) -> None:
    result = agent("scan", "--policy", str(tmp_path / "absent.yaml"), *SENSOR_FLAGS)
    assert result.returncode == 1
    assert "cannot read the file" in result.stderr


@pytest.mark.parametrize("args", [
    ["scan", "--bogus"],
    ["scan", "--root", "/no/such/dir"],
    ["watch", "--process-interval", "0"],
    [],
])
def test_usage_errors_exit_2(agent: Any, args: list[str]) -> None:
    result = agent(*args)
    assert result.returncode == 2
    assert "usage: warden-agent" in result.stderr


def test_invalid_settings_exit_2_and_name_the_setting(agent: Any, agent_environ: Any) -> None:
    result = agent("scan", *SENSOR_FLAGS,
                   env=agent_environ(WARDEN_AGENT_PROCESS_INTERVAL="-1"))
    assert result.returncode == 2
    assert "WARDEN_AGENT_PROCESS_INTERVAL" in result.stderr
    assert "Traceback" not in result.stderr


def test_parser_leaves_room_for_more_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["scan", "--once", "--json", "--no-network"])
    assert (args.command, args.once, args.json, args.network, args.installed) == (
        "scan", True, True, False, None)
    assert callable(args.func)


def test_main_runs_in_process(
    fakes: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path
) -> None:
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(tmp_path / "none.toml"))
    process = fakes.start("Telegram")
    assert main(["scan", "--once", "--json", *SENSOR_FLAGS]) == 3
    report = json.loads(capsys.readouterr().out)
    assert process.pid in {f.get("pid") for f in report["findings"]}


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_watch_json_reports_open_and_resolve_then_stops_cleanly(
    stop: signal.Signals, fakes: Any, lines: Any, agent_environ: Any,
    agent_command: list[str],
) -> None:
    watch = subprocess.Popen(
        [*agent_command, "watch", "--json", *SENSOR_FLAGS],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_environ())
    try:
        out, err = lines(watch.stdout), lines(watch.stderr)
        err.next_matching(lambda line: "watching" in line)
        process = fakes.start("telegram-desktop")

        def about(kind: str) -> Any:
            return lambda line: json.loads(line)["event"] == kind and json.loads(
                line).get("pid") == process.pid

        opened = json.loads(out.next_matching(about("opened")))
        assert opened["app"] == "telegram"
        assert opened["evidence"]["name"] == "telegram-desktop"
        assert opened["time"].endswith("Z")

        fakes.stop(process)
        resolved = json.loads(out.next_matching(about("resolved")))
        assert resolved["key"] == opened["key"]

        watch.send_signal(stop)
        assert watch.wait(timeout=10) == 0
        assert not [line for line in err.seen if "Traceback" in line]
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait()


def test_watch_human_output(fakes: Any, lines: Any, agent_environ: Any,
                            agent_command: list[str]) -> None:
    watch = subprocess.Popen(
        [*agent_command, "watch", *SENSOR_FLAGS], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=agent_environ())
    try:
        out, err = lines(watch.stdout), lines(watch.stderr)
        err.next_matching(lambda line: "watching" in line)
        process = fakes.start("Telegram")
        line = out.next_matching(lambda text: f"pid {process.pid} " in text)
        assert "OPENED" in line
        assert "Telegram (deny, notify) process" in line
        assert line.endswith("-> use Signal instead")
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait()


def test_ordinary_user_sees_what_it_can_and_says_what_it_could_not(
    fakes: Any, unprivileged: Unprivileged
) -> None:
    # The fake Telegram runs as root; the agent runs as nobody.
    process = fakes.start("telegram-desktop")
    result = unprivileged.run(
        "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))",
        "scan", "--once", "--json", *SENSOR_FLAGS,
        # Somewhere nobody may look (the pytest tmp folder is root's own).
        env={"WARDEN_AGENT_CONFIG": "/warden-test-no-such-dir/agent.toml"})
    assert result.returncode == 3, result.stderr
    report = json.loads(result.stdout)
    (finding,) = [f for f in report["findings"] if f.get("pid") == process.pid]
    # The name is public; the exe link of another user's process is not.
    assert finding["evidence"]["name"] == "telegram-desktop"
    assert finding["evidence"]["exe"] is None
    assert finding["evidence"]["username"] == "root"
    assert any(w.startswith("ran as ordinary user: ") and
               "processes of other users could not be fully inspected" in w
               for w in report["warnings"]), report["warnings"]


DESKTOP_ENTRY = "[Desktop Entry]\nType=Application\nName=Telegram\nExec=telegram-desktop\n"


def test_scan_root_finds_an_installed_app(agent: Any, tmp_path: Path) -> None:
    applications = tmp_path / "image" / "usr" / "share" / "applications"
    applications.mkdir(parents=True)
    (applications / "org.telegram.desktop.desktop").write_text(DESKTOP_ENTRY)
    (applications / "signal-desktop.desktop").write_text(DESKTOP_ENTRY.replace("Tele", "Sig"))
    result = agent("scan", "--once", "--json", "--root", str(tmp_path / "image"),
                   "--os", "linux", "--no-processes", "--no-network")
    assert result.returncode == 3, result.stderr
    (finding,) = json.loads(result.stdout)["findings"]  # Signal's entry is allowed: not listed
    assert (finding["app"], finding["sensor"], finding["verdict"]) == (
        "telegram", "installed", "deny")
    assert finding["evidence"]["id"] == "org.telegram.desktop.desktop"
    assert finding["evidence"]["path"] == "/usr/share/applications/org.telegram.desktop.desktop"
    assert "pid" not in finding


def test_watch_sees_an_install_and_its_removal(
    tmp_path: Path, lines: Any, agent_environ: Any, agent_command: list[str]
) -> None:
    applications = tmp_path / "image" / "usr" / "share" / "applications"
    applications.mkdir(parents=True)
    watch = subprocess.Popen(
        [*agent_command, "watch", "--json", "--root", str(tmp_path / "image"), "--os", "linux",
         "--no-processes", "--no-network"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_environ())
    try:
        out, err = lines(watch.stdout), lines(watch.stderr)
        err.next_matching(lambda line: "watching" in line)
        entry = applications / "org.telegram.desktop.desktop"
        entry.write_text(DESKTOP_ENTRY)
        opened = json.loads(out.next_matching(lambda line: '"opened"' in line))
        assert (opened["sensor"], opened["evidence"]["id"]) == ("installed", entry.name)
        entry.unlink()
        resolved = json.loads(out.next_matching(lambda line: '"resolved"' in line))
        assert resolved["key"] == opened["key"]
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=10) == 0
    finally:
        if watch.poll() is None:
            watch.kill()
        watch.wait()


@pytest.mark.parametrize("content", [b"server_url = \n", "server_url = 'x'".encode("utf-16")])
def test_a_config_file_that_is_not_toml_is_a_clear_settings_error(
    content: bytes, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.toml"
    config.write_bytes(content)  # a typo, or PowerShell 5.1's `>` writing UTF-16
    monkeypatch.setenv("WARDEN_AGENT_CONFIG", str(config))
    assert main(["status"]) == 2
    assert f"cannot read the agent config file {config}" in capsys.readouterr().err
