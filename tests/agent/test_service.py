"""Service files render to valid, hardened units and install with the right modes and commands."""

from __future__ import annotations

import argparse
import configparser
import plistlib
import shutil
import stat
import subprocess
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest

import agent
from agent.service.install import (
    ServiceInstallError,
    add_install_service_parser,
    describe_plan,
    install_service,
    plan_service,
)
from agent.service.render import (
    WindowsHost,
    render_env_file,
    render_launchd_plist,
    render_systemd_unit,
    render_windows_install_script,
    render_windows_launcher,
)
from agent.settings import load_settings

ENV = {"WARDEN_AGENT_SERVER_URL": "https://warden.example.test",
       "WARDEN_AGENT_ENROLL_SECRET": 'pa$$ "word" `x` \\y'}


class RecordingRunner:
    def __init__(self, fail: Collection[str] = ()) -> None:
        self.calls: list[tuple[list[str], dict[str, str] | None]] = []
        self._fail = fail

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs.get("env")))
        code = 1 if " ".join(argv) in self._fail else 0
        return subprocess.CompletedProcess(argv, code, "", "it broke" if code else "")

    @property
    def argvs(self) -> list[list[str]]:
        return [argv for argv, _ in self.calls]


def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


# -- systemd -------------------------------------------------------------------


def test_systemd_unit_is_hardened_and_capped() -> None:
    unit = unit_sections(render_systemd_unit("/opt/warden/bin/warden-agent",
                                             "/var/lib/warden-agent"))
    service = unit["Service"]
    expected = {
        "Type": "simple", "ExecStart": "/opt/warden/bin/warden-agent run",
        "Restart": "on-failure", "Nice": "10", "CPUQuota": "10%", "MemoryMax": "200M",
        "ProtectSystem": "strict", "ReadWritePaths": "/var/lib/warden-agent",
        "ProtectHome": "read-only", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "EnvironmentFile": "/etc/warden/agent.env",
        "Environment": "WARDEN_AGENT_STATE_DIR=/var/lib/warden-agent",
    }
    assert {key: service.get(key) for key in expected} == expected
    capabilities = set(service["CapabilityBoundingSet"].split())
    assert {"CAP_KILL", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"} <= capabilities
    assert "CAP_SYS_ADMIN" not in capabilities and "CAP_DAC_OVERRIDE" not in capabilities
    assert "ProtectProc" not in service  # "invisible" would blind the process sensor
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_systemd_values_are_quoted_and_specifiers_escaped() -> None:
    unit = unit_sections(render_systemd_unit("/opt/my apps/warden%agent", "/srv/warden state"))
    assert unit["Service"]["ExecStart"] == '"/opt/my apps/warden%%agent" run'
    assert unit["Service"]["ReadWritePaths"] == '"/srv/warden state"'
    with pytest.raises(ValueError, match="absolute"):
        render_systemd_unit("warden-agent", "/var/lib/warden-agent")
    with pytest.raises(ValueError, match="control character"):
        render_systemd_unit("/opt/x\nExecStartPre=/bin/evil", "/var/lib/warden-agent")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed on this machine")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    exe = tmp_path / "bin dir" / "warden-agent"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    unit = tmp_path / "warden-agent.service"
    unit.write_text(render_systemd_unit(str(exe), str(tmp_path / "state")))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60, check=False)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "warden-agent.service" in line]
    assert result.returncode == 0 and complaints == [], result.stderr


def test_env_file_quotes_values_so_systemd_reads_them_back_verbatim() -> None:
    text = render_env_file(ENV)
    assert 'WARDEN_AGENT_ENROLL_SECRET="pa\\$\\$ \\"word\\" \\`x\\` \\\\y"' in text
    assert 'WARDEN_AGENT_SERVER_URL="https://warden.example.test"' in text
    with pytest.raises(ValueError, match="not an environment variable name"):
        render_env_file({"BAD NAME": "x"})
    with pytest.raises(ValueError, match="control character"):
        render_env_file({"WARDEN_AGENT_SERVER_URL": "x\nLD_PRELOAD=/tmp/evil.so"})


def test_install_on_linux_writes_unit_and_private_env_file_then_enables(tmp_path: Path) -> None:
    runner = RecordingRunner()
    done = install_service("linux", "/usr/local/bin/warden-agent", "/var/lib/warden-agent",
                           {**ENV, "WARDEN_AGENT_STATE_DIR": "/elsewhere"}, root=tmp_path,
                           runner=runner)
    unit = tmp_path / "etc/systemd/system/warden-agent.service"
    env_file = tmp_path / "etc/warden/agent.env"
    state = tmp_path / "var/lib/warden-agent"
    assert unit_sections(unit.read_text())["Service"]["ExecStart"] == \
        "/usr/local/bin/warden-agent run"
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert env_file.read_text() == render_env_file(ENV)  # the unit owns the state dir
    assert runner.argvs == [["systemctl", "daemon-reload"],
                            ["systemctl", "enable", "warden-agent.service"],
                            ["systemctl", "restart", "warden-agent.service"]]
    assert done == ["created /etc/warden (0755)", "created /var/lib/warden-agent (0700)",
                    "wrote /etc/systemd/system/warden-agent.service (0644)",
                    "wrote /etc/warden/agent.env (0600)",
                    "ran systemctl daemon-reload", "ran systemctl enable warden-agent.service",
                    "ran systemctl restart warden-agent.service"]
    assert not any(path.name.endswith(".tmp") for path in tmp_path.rglob("*"))


def test_a_failing_command_stops_the_install_and_says_what_was_done(tmp_path: Path) -> None:
    runner = RecordingRunner(fail={"systemctl enable warden-agent.service"})
    with pytest.raises(ServiceInstallError) as raised:
        install_service("linux", "/usr/local/bin/warden-agent", "/var/lib/warden-agent", ENV,
                        root=tmp_path, runner=runner)
    message = str(raised.value)
    assert message.startswith("systemctl enable warden-agent.service failed (exit 1): it broke")
    assert "ran systemctl daemon-reload" in message
    assert ["systemctl", "restart", "warden-agent.service"] not in runner.argvs


# -- launchd -------------------------------------------------------------------


def test_launchd_plist_round_trips_through_plistlib() -> None:
    text = render_launchd_plist("/usr/local/bin/warden-agent", "/Library/Application Support/"
                                "Warden/state", {"WARDEN_AGENT_SERVER_URL": "https://w.test/<&>"})
    plist = plistlib.loads(text.encode("utf-8"))
    assert plist["Label"] == "com.warden.agent"
    assert plist["ProgramArguments"] == ["/usr/local/bin/warden-agent", "run"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] is True
    assert plist["ProcessType"] == "Background" and plist["Nice"] == 10
    assert plist["EnvironmentVariables"] == {
        "WARDEN_AGENT_SERVER_URL": "https://w.test/<&>",
        "WARDEN_AGENT_STATE_DIR": "/Library/Application Support/Warden/state"}
    assert plist["StandardErrorPath"] == "/Library/Logs/Warden/agent.log"


def test_install_on_macos_keeps_the_secret_out_of_the_plist(tmp_path: Path) -> None:
    runner = RecordingRunner(fail={"launchctl bootout system/com.warden.agent"})
    done = install_service("macos", "/usr/local/bin/warden-agent",
                           "/Library/Application Support/Warden/state", ENV, root=tmp_path,
                           runner=runner)
    plist_path = tmp_path / "Library/LaunchDaemons/com.warden.agent.plist"
    secret = tmp_path / "Library/Application Support/Warden/enroll-secret"
    plist = plistlib.loads(plist_path.read_bytes())
    assert "WARDEN_AGENT_ENROLL_SECRET" not in plist["EnvironmentVariables"]
    assert plist["EnvironmentVariables"]["WARDEN_AGENT_ENROLL_SECRET_FILE"] == \
        "/Library/Application Support/Warden/enroll-secret"
    assert secret.read_text() == ENV["WARDEN_AGENT_ENROLL_SECRET"] + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(plist_path.stat().st_mode) == 0o644
    assert (tmp_path / "Library/Logs/Warden").is_dir()
    # Not loaded before: the bootout fails, which is fine.
    assert runner.argvs == [
        ["launchctl", "bootout", "system/com.warden.agent"],
        ["launchctl", "enable", "system/com.warden.agent"],
        ["launchctl", "bootstrap", "system", "/Library/LaunchDaemons/com.warden.agent.plist"]]
    assert "ran launchctl bootout system/com.warden.agent (exit 1, ignored)" in done


# -- Windows -------------------------------------------------------------------


HOST = WindowsHost(r"C:\Program Files\Python311\python.exe")
VENV_HOST = WindowsHost(r"C:\Program Files\Python311\python.exe",
                        (r"C:\Warden\venv\Lib\site-packages",))
LAUNCHER = r"C:\Program Files\Warden\warden-agent-service.py"


def test_windows_script_never_takes_over_a_folder_it_did_not_make() -> None:
    script = render_windows_install_script(HOST, LAUNCHER)
    # The pre-flight (agent.host.ownership over the folders: tests/agent/test_ownership_cli.py)
    # runs before any folder is made or re-owned, and stops the script when it fails.
    assert script.index("$Launcher --check") < script.index("New-PrivateDirectory $ConfigDir")
    assert "if (Test-Path -LiteralPath $Path) { return }" in script  # an existing one is kept
    assert "New-Item -ItemType Directory -Path $Path |" in script  # no -Force: never reused
    # Never re-owned recursively: that would hand a planted agent.toml to Administrators.
    assert not [line for line in script.splitlines() if "icacls" in line and "/T" in line]
    made = script[script.index("function New-PrivateDirectory"):]
    assert made.index("/inheritance:r") < made.index(
        "if (Get-ChildItem -LiteralPath $Path -Force) {")  # planted meanwhile: stop


def test_windows_script_registers_a_service_with_failure_actions() -> None:
    script = render_windows_install_script(HOST, LAUNCHER)
    assert "[string]$Python = 'C:\\Program Files\\Python311\\python.exe'," in script
    assert "[string]$PythonFlags = ''," in script
    assert f"[string]$Launcher = '{LAUNCHER}'," in script
    assert "[string]$StateDir = (Join-Path $env:ProgramData 'Warden\\state')" in script
    # The SCM starts python.exe itself on the launcher (never warden-agent.exe).
    assert '$binaryPath = (@("`"$Python`"") + $flags + @("`"$Launcher`"")) -join \' \'' in script
    assert "New-Service -Name $Name -BinaryPathName $binaryPath" in script
    # A broken install stops before the service is registered.
    assert script.index("$Launcher --check") < script.index("New-Service")
    assert "Invoke-Sc @('failure', $Name, 'reset=', '86400', 'actions=', 'restart/5000/" in script
    assert "Invoke-Sc @('failureflag', $Name, '1')" in script
    # A re-install replaces the command line in the registry, never through sc.exe's
    # quoting, and every sc.exe call is checked.
    assert "Set-ItemProperty -LiteralPath $serviceKey -Name ImagePath -Value $binaryPath" in script
    assert "sc.exe config $Name binPath=" not in script
    assert 'if ($LASTEXITCODE -ne 0) { throw "sc.exe' in script
    # A folder created beforehand by a user is taken over before it is restricted.
    assert script.index("/setowner '*S-1-5-32-544'") < script.index("/inheritance:r")
    assert "WARDEN_AGENT_ENROLL_SECRET_FILE" in script
    assert "WARDEN_AGENT_LOG_FILE=$(Join-Path $ConfigDir 'logs\\agent.log')" in script
    assert "{{" not in script


def test_windows_paths_cannot_break_out_of_the_powershell_string() -> None:
    script = render_windows_install_script(WindowsHost(r"C:\Users\O'Brien\python.exe"),
                                           LAUNCHER, "D:\\Warden\u2019s state")
    assert "[string]$Python = 'C:\\Users\\O''Brien\\python.exe'," in script
    assert "[string]$StateDir = 'D:\\Warden\u2019\u2019s state'" in script
    with pytest.raises(ValueError, match="absolute"):
        render_windows_install_script(WindowsHost("python.exe"), LAUNCHER)


def test_the_windows_launcher_adds_a_venvs_packages_to_a_bare_interpreter() -> None:
    launcher = render_windows_launcher(VENV_HOST, LAUNCHER)
    assert "for directory in ['C:\\\\Warden\\\\venv\\\\Lib\\\\site-packages']:" in launcher
    assert ('#   "C:\\Program Files\\Python311\\python.exe" -S '
            '"C:\\Program Files\\Warden\\warden-agent-service.py" --check') in launcher
    assert "from agent.service.windows import main" in launcher
    compile(launcher, LAUNCHER, "exec")  # valid Python whatever the paths hold
    assert "for directory in []:" in render_windows_launcher(HOST, LAUNCHER)


def test_install_on_windows_writes_the_launcher_and_script_and_runs_it(
    tmp_path: Path,
) -> None:
    runner = RecordingRunner()
    exe = r"C:\Program Files\Warden\warden-agent.exe"
    install_service("windows", exe, r"C:\ProgramData\Warden\state", ENV, root=tmp_path,
                    runner=runner, windows_host=VENV_HOST)
    folder = tmp_path / "Program Files" / "Warden"
    assert (folder / "install-warden-agent.ps1").read_text() == render_windows_install_script(
        VENV_HOST, LAUNCHER, r"C:\ProgramData\Warden\state")
    assert (folder / "warden-agent-service.py").read_text() == render_windows_launcher(
        VENV_HOST, LAUNCHER)
    [(argv, env)] = runner.calls
    assert argv == ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy",
                    "Bypass", "-File", r"C:\Program Files\Warden\install-warden-agent.ps1"]
    # The secret travels in the environment, never on a command line others can read.
    assert env is not None and env["WARDEN_AGENT_ENROLL_SECRET"] == ENV[
        "WARDEN_AGENT_ENROLL_SECRET"]
    assert not any(ENV["WARDEN_AGENT_ENROLL_SECRET"] in arg for arg in argv)


def test_the_launcher_really_runs_the_agent_on_the_base_interpreter(tmp_path: Path) -> None:
    """What the SCM does, here: the base python with -S, this venv's packages added."""
    host = WindowsHost.current()
    if sys.prefix == sys.base_prefix:
        pytest.skip("the test suite does not run in a virtual environment")
    assert host.python != sys.executable and host.flags == "-S"
    launcher = tmp_path / "warden-agent-service.py"
    launcher.write_text(render_windows_launcher(host, str(launcher)))
    env = {"PATH": "/usr/bin:/bin", "WARDEN_AGENT_CONFIG": str(tmp_path / "none.toml"),
           "WARDEN_AGENT_SERVER_URL": "https://warden.example.test"}
    result = subprocess.run([host.python, "-S", str(launcher), "--check"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    found = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert found["python"] == host.python
    assert Path(found["agent"]).parent == Path(agent.__file__).parent
    assert found["psutil"].startswith(host.site_dirs[0])
    assert found["server"] == "https://warden.example.test"
    bad = subprocess.run([host.python, "-S", str(launcher), "--check"],
                         env={**env, "WARDEN_AGENT_NETWORK_INTERVAL": "0"},
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2
    assert "network_interval (WARDEN_AGENT_NETWORK_INTERVAL" in bad.stdout


# -- command line ----------------------------------------------------------------


def test_dry_run_prints_the_plan_without_the_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    parser = argparse.ArgumentParser(prog="warden-agent")
    add_install_service_parser(parser.add_subparsers(dest="command"))
    secret_file = tmp_path / "secret"
    secret_file.write_text("top-secret-value\n")
    monkeypatch.delenv("WARDEN_AGENT_ENROLL_SECRET", raising=False)
    args = parser.parse_args(["install-service", "--dry-run", "--server-url",
                              "https://warden.example.test", "--enroll-secret-file",
                              str(secret_file), "--state-dir", str(tmp_path / "state"),
                              "--exe", str(tmp_path / "warden-agent")])
    assert args.func(args, load_settings()) == 0
    out = capsys.readouterr().out
    assert "top-secret-value" not in out
    assert not (tmp_path / "state").exists()
    if sys.platform.startswith("linux"):
        assert "would write /etc/systemd/system/warden-agent.service (0644):" in out
        assert 'WARDEN_AGENT_ENROLL_SECRET="<secret, not shown>"' in out
        assert 'WARDEN_AGENT_SERVER_URL="https://warden.example.test"' in out
        assert "would run systemctl daemon-reload" in out


def test_describe_plan_hides_a_whole_secret_file() -> None:
    plan = plan_service("macos", "/usr/local/bin/warden-agent", "/var/db/warden", ENV)
    text = describe_plan(plan)
    assert ENV["WARDEN_AGENT_ENROLL_SECRET"] not in text
    assert "would write /Library/Application Support/Warden/enroll-secret (0600):\n" \
           "    <secret, not shown>" in text


def test_reinstalling_keeps_existing_directories_and_replaces_files(tmp_path: Path) -> None:
    state = tmp_path / "var/lib"
    state.mkdir(parents=True, mode=0o755)
    env_file = tmp_path / "etc/warden/agent.env"
    env_file.parent.mkdir(parents=True)
    env_file.write_text("OLD=1\n")
    env_file.chmod(0o644)
    done = install_service("linux", "/usr/local/bin/warden-agent", "/var/lib", ENV,
                           root=tmp_path, runner=RecordingRunner())
    assert "kept /var/lib (exists)" in done and "kept /etc/warden (exists)" in done
    assert stat.S_IMODE(state.stat().st_mode) == 0o755
    assert env_file.read_text() == render_env_file(ENV)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600


def test_a_bad_path_is_a_clear_error_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    parser = argparse.ArgumentParser(prog="warden-agent")
    add_install_service_parser(parser.add_subparsers(dest="command"))
    # --dry-run: should the check ever regress, this test still must not install for real.
    args = parser.parse_args(["install-service", "--dry-run", "--exe", "bin/warden-agent",
                              "--state-dir", str(tmp_path / "state")])
    assert args.func(args, load_settings()) == 1
    assert "'bin/warden-agent' is not an absolute path" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()
