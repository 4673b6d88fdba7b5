"""`warden-agent uninstall-service`: stop the service and remove what install-service wrote.

The state directory (token, policy, spool) stays unless `--purge` is given,
so a re-install picks up where the agent left off; a purge refuses a
directory holding anything the agent did not write there, so a mistyped
`--state-dir /var/lib` cannot wipe a system folder. The machine stays known
to the server: revoke it there (`warden agents revoke ID`) when it leaves
the fleet.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

from agent.host.platform import current_os
from agent.service.install import (
    LAUNCHD_LABEL,
    LAUNCHD_PLIST_PATH,
    MACOS_CONFIG_DIR,
    SERVICE_NAME,
    SYSTEMD_UNIT_PATH,
    WINDOWS_LAUNCHER_NAME,
    PlannedCommand,
    Runner,
    ServiceInstallError,
    default_exe,
    failure,
    run_commands,
    under_root,
)
from agent.service.render import SYSTEMD_ENV_FILE, WINDOWS_SCRIPT_NAME, absolute_path
from policies.vocabulary import OsName

if TYPE_CHECKING:
    from agent.settings import AgentSettings

# What the agent writes in its state directory; anything else stops a purge.
_STATE_FILE = re.compile(
    r"((identity|policy)\.json(\.untrusted)?|status\.json|machine-id"
    r"|spool\.db(-wal|-shm|-journal)?"
    r"|\..+\.tmp|\.(identity|policy|status)\.json\..+)\Z")


@dataclass(frozen=True)
class RemovalPlan:
    stop: tuple[PlannedCommand, ...]  # stop and unregister the service
    files: tuple[str, ...]  # removed when present
    after: tuple[PlannedCommand, ...]  # e.g. tell systemd its unit is gone
    purge: str | None  # the state directory, when it goes too


def plan_uninstall(os_name: OsName, exe_path: str, state_dir: str, purge: bool,
                   windows_config_dir: str | None = None) -> RemovalPlan:
    """What uninstalling from `os_name` stops and removes. Changes nothing."""
    purged = absolute_path(state_dir, os_name) if purge else None
    if os_name == "linux":
        return RemovalPlan(
            stop=(PlannedCommand(("systemctl", "disable", "--now", f"{SERVICE_NAME}.service"),
                                 may_fail=True),),  # not installed: nothing to stop
            files=(SYSTEMD_UNIT_PATH, SYSTEMD_ENV_FILE),
            after=(PlannedCommand(("systemctl", "daemon-reload")),),
            purge=purged)
    if os_name == "macos":
        return RemovalPlan(
            stop=(PlannedCommand(("launchctl", "bootout", f"system/{LAUNCHD_LABEL}"),
                                 may_fail=True),),
            files=(LAUNCHD_PLIST_PATH, f"{MACOS_CONFIG_DIR}/enroll-secret"),
            after=(),
            purge=purged)
    # Here: the Windows service host is memory every running agent would carry.
    from agent.service.windows import SERVICE_NAME as WINDOWS_SERVICE_NAME

    folder = PureWindowsPath(absolute_path(exe_path, "windows")).parent
    config = windows_config_dir or str(
        PureWindowsPath(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "Warden")
    return RemovalPlan(
        # Stop-Service waits until the service has stopped (`sc.exe stop` does not), so
        # its spool is closed before a purge; sc.exe delete answers 1060 when there is
        # no such service, which is nothing to do.
        stop=(PlannedCommand(("powershell.exe", "-NoProfile", "-NonInteractive", "-Command",
                              f"Stop-Service -Name {WINDOWS_SERVICE_NAME} -Force "
                              "-ErrorAction SilentlyContinue"), may_fail=True),
              PlannedCommand(("sc.exe", "delete", WINDOWS_SERVICE_NAME), may_fail=True)),
        files=(str(folder / WINDOWS_LAUNCHER_NAME), str(folder / WINDOWS_SCRIPT_NAME),
               str(PureWindowsPath(config) / "enroll-secret")),
        after=(),
        purge=purged)


def uninstall_service(os_name: OsName, plan: RemovalPlan, root: Path = Path("/"),
                      runner: Runner = subprocess.run) -> list[str]:
    """Carry out `plan` under `root`; what was done, in order."""
    done: list[str] = []
    run_commands(plan.stop, runner, done)
    try:
        for path in plan.files:
            target = under_root(root, path, os_name)
            if target.exists():
                target.unlink()
                done.append(f"removed {path}")
        if plan.purge is not None:
            _purge(under_root(root, plan.purge, os_name), plan.purge, done)
    except OSError as exc:
        raise ServiceInstallError(failure(f"cannot remove: {exc}", done)) from exc
    run_commands(plan.after, runner, done)
    return done


def _purge(target: Path, shown: str, done: list[str]) -> None:
    if not target.exists():
        return
    foreign = sorted(entry.name for entry in target.iterdir()
                     if not _STATE_FILE.match(entry.name))
    if foreign:
        raise ServiceInstallError(failure(
            f"not purging {shown}: it holds files the agent did not write ({', '.join(foreign)})"
            "; check --state-dir, or remove the directory yourself", done))
    shutil.rmtree(target)
    done.append(f"removed {shown} and everything in it")


def describe_removal(plan: RemovalPlan) -> str:
    """The plan as text for --dry-run."""
    out = [f"would run {shlex.join(command.argv)}" for command in plan.stop]
    out += [f"would remove {path} if present" for path in plan.files]
    if plan.purge is not None:
        out.append(f"would remove {plan.purge} and everything in it (the agent's state)")
    out += [f"would run {shlex.join(command.argv)}" for command in plan.after]
    return "\n".join(out)


# -- command line --------------------------------------------------------------


def add_uninstall_service_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "uninstall-service", help="stop the agent's service and remove its files",
        description="Stop and unregister the service, remove the files install-service "
                    "wrote. Run as root/Administrator. The state directory stays unless "
                    "--purge is given; revoke the machine on the server as well.")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what would be stopped and removed; change nothing")
    parser.add_argument("--purge", action="store_true",
                        help="also remove the state directory: token, policy, unsent events")
    parser.add_argument("--state-dir", help="the agent's state directory "
                                            "(default: the state_dir setting)")
    parser.add_argument("--exe", help="the warden-agent program the service ran (Windows: "
                                      "its folder holds the service host; default: this one)")
    parser.set_defaults(func=uninstall_service_command)
    return parser


def uninstall_service_command(args: argparse.Namespace, settings: AgentSettings) -> int:
    try:
        os_name = current_os()
        state_dir = args.state_dir or str(settings.state_dir)
        exe = args.exe or (default_exe() if os_name == "windows" else sys.executable)
        plan = plan_uninstall(os_name, exe, state_dir, args.purge)
        if args.dry_run:
            print(describe_removal(plan))
            return 0
        agent_id = _agent_id(Path(state_dir))
        done = uninstall_service(os_name, plan)
    except (ServiceInstallError, ValueError, OSError) as exc:
        print(f"warden-agent uninstall-service: {exc}", file=sys.stderr)
        return 1
    print("\n".join(done))
    if agent_id:
        print(f"This machine is still enrolled as agent {agent_id}; when it leaves the fleet, "
              f"revoke it on the server: warden agents revoke {agent_id}")
    return 0


def _agent_id(state_dir: Path) -> str | None:
    try:
        identity = json.loads((state_dir / "identity.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    agent_id = identity.get("agent_id") if isinstance(identity, dict) else None
    return str(agent_id) if agent_id else None
