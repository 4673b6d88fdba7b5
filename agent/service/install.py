"""Installing the agent as the OS's service: systemd unit, launchd daemon, Windows service.

agent/service/render.py fills in the reviewed templates of
`agent/service/files/`; this module lays out what an install writes and runs
(`plan_service`) and does it (`install_service`). `warden-agent install-service` is the front door:
see `add_install_service_parser`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING

from agent.host.platform import current_os
from agent.service.render import (
    MACOS_LOG_PATH,
    STATE_DIR_VAR,
    SYSTEMD_ENV_FILE,
    WINDOWS_SCRIPT_NAME,
    WindowsHost,
    absolute_path,
    render_env_file,
    render_launchd_plist,
    render_systemd_unit,
    render_windows_install_script,
    render_windows_launcher,
)
from policies.vocabulary import OsName

if TYPE_CHECKING:
    from agent.settings import AgentSettings

Runner = Callable[..., subprocess.CompletedProcess[str]]

SERVICE_NAME = "warden-agent"
LAUNCHD_LABEL = "com.warden.agent"
SYSTEMD_UNIT_PATH = "/etc/systemd/system/warden-agent.service"
LAUNCHD_PLIST_PATH = "/Library/LaunchDaemons/com.warden.agent.plist"
MACOS_CONFIG_DIR = "/Library/Application Support/Warden"
WINDOWS_LAUNCHER_NAME = "warden-agent-service.py"

SECRET_VAR = "WARDEN_AGENT_ENROLL_SECRET"
REQUEST_SOCKET_VAR = "WARDEN_AGENT_REQUEST_SOCKET"
LINUX_REQUEST_SOCKET = "/run/warden-agent/request.sock"


class ServiceInstallError(Exception):
    """An install step failed; the message says which and what was already done."""


# -- planning and installing -------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    path: str  # where it goes on the machine
    content: str
    mode: int
    # What --dry-run prints instead of the content, when the content holds a secret.
    shown: str | None = None


@dataclass(frozen=True)
class PlannedCommand:
    argv: tuple[str, ...]
    may_fail: bool = False  # e.g. unloading a daemon that was not loaded
    env: Mapping[str, str] = field(default_factory=dict)  # added to the environment


@dataclass(frozen=True)
class ServicePlan:
    directories: tuple[tuple[str, int], ...]
    files: tuple[PlannedFile, ...]
    commands: tuple[PlannedCommand, ...]


def plan_service(os_name: OsName, exe_path: str, state_dir: str, env: Mapping[str, str],
                 windows_host: WindowsHost | None = None) -> ServicePlan:
    """What installing the service on `os_name` writes and runs. Changes nothing."""
    settings = {name: value for name, value in env.items() if name != STATE_DIR_VAR}
    if os_name == "linux":
        # The unit itself sets the state dir, so it always matches ReadWritePaths.
        return ServicePlan(
            directories=((str(PurePosixPath(SYSTEMD_ENV_FILE).parent), 0o755), (state_dir, 0o700)),
            files=(PlannedFile(SYSTEMD_UNIT_PATH, render_systemd_unit(exe_path, state_dir), 0o644),
                   PlannedFile(SYSTEMD_ENV_FILE, render_env_file(settings), 0o600,
                               shown=_env_file_shown(settings))),
            commands=(PlannedCommand(("systemctl", "daemon-reload")),
                      PlannedCommand(("systemctl", "enable", f"{SERVICE_NAME}.service")),
                      # restart, not start: a re-install must pick up the new unit and settings.
                      PlannedCommand(("systemctl", "restart", f"{SERVICE_NAME}.service"))))
    if os_name == "macos":
        files = []
        if SECRET_VAR in settings:
            # A LaunchDaemon plist is world-readable; the secret goes to a root-only file.
            secret_file = f"{MACOS_CONFIG_DIR}/enroll-secret"
            files.append(PlannedFile(secret_file, settings.pop(SECRET_VAR) + "\n", 0o600,
                                     shown=_HIDDEN))
            settings[f"{SECRET_VAR}_FILE"] = secret_file
        files.append(PlannedFile(LAUNCHD_PLIST_PATH,
                                 render_launchd_plist(exe_path, state_dir, settings), 0o644))
        target = f"system/{LAUNCHD_LABEL}"
        return ServicePlan(
            directories=((MACOS_CONFIG_DIR, 0o755), (str(PurePosixPath(MACOS_LOG_PATH).parent),
                                                     0o755), (state_dir, 0o700)),
            files=tuple(files),
            commands=(PlannedCommand(("launchctl", "bootout", target), may_fail=True),
                      PlannedCommand(("launchctl", "enable", target)),
                      PlannedCommand(("launchctl", "bootstrap", "system", LAUNCHD_PLIST_PATH))))
    folder = PureWindowsPath(absolute_path(exe_path, "windows")).parent
    script, launcher = str(folder / WINDOWS_SCRIPT_NAME), str(folder / WINDOWS_LAUNCHER_NAME)
    host = windows_host or WindowsHost.current()
    # The script makes its directories itself (it sets their ACLs); the settings
    # reach it through its environment, never its command line.
    return ServicePlan(
        directories=(),
        files=(PlannedFile(launcher, render_windows_launcher(host, launcher), 0o644),
               PlannedFile(script, render_windows_install_script(host, launcher, state_dir),
                           0o644)),
        commands=(PlannedCommand(("powershell.exe", "-NoProfile", "-NonInteractive",
                                  "-ExecutionPolicy", "Bypass", "-File", script),
                                 env=dict(settings)),))


def install_service(
    os_name: OsName,
    exe_path: str,
    state_dir: str,
    env: Mapping[str, str],
    root: Path = Path("/"),
    runner: Runner = subprocess.run,
    windows_host: WindowsHost | None = None,
) -> list[str]:
    """Write the service files under `root`, enable and start it; what was done, in order."""
    plan = plan_service(os_name, exe_path, state_dir, env, windows_host)
    done: list[str] = []
    try:
        for directory, mode in plan.directories:
            target = under_root(root, directory, os_name)
            if target.is_dir():
                # Never re-mode an existing directory: a mistyped --state-dir of
                # /var/lib must not become root-only.
                done.append(f"kept {directory} (exists)")
                continue
            target.mkdir(parents=True)
            os.chmod(target, mode)
            done.append(f"created {directory} ({mode:04o})")
        for planned in plan.files:
            target = under_root(root, planned.path, os_name)
            target.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, planned.content, planned.mode)
            done.append(f"wrote {planned.path} ({planned.mode:04o})")
    except OSError as exc:
        raise ServiceInstallError(failure(f"cannot write: {exc}", done)) from exc
    run_commands(plan.commands, runner, done)
    return done


def run_commands(commands: tuple[PlannedCommand, ...], runner: Runner, done: list[str]) -> None:
    """Run each command in order; stop at the first failure that may not fail."""
    for command in commands:
        shown = shlex.join(command.argv)
        try:
            result = runner(list(command.argv), capture_output=True, text=True, check=False,
                            env={**os.environ, **command.env} if command.env else None)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceInstallError(failure(f"cannot run {shown}: {exc}", done)) from exc
        if result.returncode != 0 and not command.may_fail:
            raise ServiceInstallError(failure(
                f"{shown} failed (exit {result.returncode}): {(result.stderr or '').strip()}",
                done))
        done.append(f"ran {shown}" + (f" (exit {result.returncode}, ignored)"
                                      if result.returncode else ""))


def describe_plan(plan: ServicePlan) -> str:
    """The plan as text for --dry-run, with secrets left out."""
    out = [f"would create {path} ({mode:04o}) unless it exists"
           for path, mode in plan.directories]
    for planned in plan.files:
        out.append(f"would write {planned.path} ({planned.mode:04o}):")
        body = planned.content if planned.shown is None else planned.shown
        out.extend("    " + line for line in body.rstrip("\n").splitlines())
    out.extend(f"would run {shlex.join(command.argv)}" for command in plan.commands)
    return "\n".join(out)


_HIDDEN = "<secret, not shown>"


def _env_file_shown(settings: Mapping[str, str]) -> str | None:
    if SECRET_VAR not in settings:
        return None
    return render_env_file({**settings, SECRET_VAR: _HIDDEN})


def failure(what: str, done: list[str]) -> str:
    return what + ("\nalready done:\n  " + "\n  ".join(done) if done else "")


def under_root(root: Path, path: str, os_name: OsName) -> Path:
    """`path` on the machine, re-rooted under `root` (an image or a test directory)."""
    if root == Path("/"):
        return Path(path)
    pure = PureWindowsPath(path) if os_name == "windows" else PurePosixPath(path)
    return root.joinpath(*pure.parts[1:])


def _write_atomically(target: Path, content: str, mode: int) -> None:
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # Created afresh with its final mode, so a secret is never readable by others,
    # not even briefly through a stale temporary file.
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)  # the umask may have taken bits away
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


# -- command line --------------------------------------------------------------


def add_install_service_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register `warden-agent install-service`; dispatch with `args.func(args, settings)`."""
    parser = subparsers.add_parser(
        "install-service",
        help="install the agent as this machine's service and start it",
        description="Write the systemd unit (Linux), LaunchDaemon (macOS) or service install "
                    "script (Windows), enable it and start it. Run as root/Administrator. "
                    "Settings come from the options and from WARDEN_AGENT_* variables.")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be written and run; change nothing")
    parser.add_argument("--server-url",
                        help="the Warden server (default: $WARDEN_AGENT_SERVER_URL)")
    parser.add_argument("--enroll-secret-file", type=Path,
                        help="file holding the enrollment secret "
                             "(default: $WARDEN_AGENT_ENROLL_SECRET)")
    parser.add_argument("--state-dir", help="where the agent keeps its token, policy and spool "
                                            "(default: the state_dir setting)")
    parser.add_argument("--exe", help="the warden-agent program the service runs "
                                      "(default: the one running this command)")
    parser.set_defaults(func=install_service_command)
    return parser


def install_service_command(args: argparse.Namespace, settings: AgentSettings) -> int:
    try:
        os_name = current_os()
        env = {name: value for name, value in os.environ.items()
               if name.startswith("WARDEN_AGENT_") and name != STATE_DIR_VAR}
        if os_name == "linux":
            # In the folder the unit's RuntimeDirectory makes: any local user may ask there.
            env.setdefault(REQUEST_SOCKET_VAR, LINUX_REQUEST_SOCKET)
        if args.server_url:
            env["WARDEN_AGENT_SERVER_URL"] = args.server_url
        if args.enroll_secret_file:
            env[SECRET_VAR] = args.enroll_secret_file.read_text(encoding="utf-8").strip()
        state_dir = args.state_dir or str(settings.state_dir)
        exe = args.exe or default_exe()
        if args.dry_run:
            print(describe_plan(plan_service(os_name, exe, state_dir, env)))
            return 0
        done = install_service(os_name, exe, state_dir, env)
    except (ServiceInstallError, ValueError, OSError) as exc:
        print(f"warden-agent install-service: {exc}", file=sys.stderr)
        return 1
    print("\n".join(done))
    return 0


def default_exe() -> str:
    argv0 = Path(sys.argv[0])
    if argv0.stem == "warden-agent" and argv0.is_file():
        return str(argv0.absolute())
    found = shutil.which("warden-agent")
    if found is None:
        raise ServiceInstallError("cannot tell where warden-agent is installed; pass --exe")
    return str(Path(found).absolute())
