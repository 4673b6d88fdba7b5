"""Processes no policy may end: a blocking rule that would hit one is refused at validation.

Each entry is one process as an agent sees it on its OS (name, exe, command
line). A blocking rule's app is run against every entry with the engine the
agents themselves run, so what is refused here is exactly what an agent in
enforce mode would have killed: init, the SSH server, the login manager, the
display server, the agent itself. The check ignores the policy's mode: audit
becomes enforce by editing one word, and the rule must be safe by then.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from policies.catalog_model import AppDefinition
from policies.compiler import compact_app
from policies.engine import Engine, HostContext
from policies.observations import ProcessObservation
from policies.vocabulary import OsName

# Actions that stop something on the machine (rather than tell someone about it).
BLOCKING_ACTIONS = frozenset({"terminate", "block"})
_WILDCARDS = frozenset("*?/\\")


@dataclass(frozen=True)
class CriticalProcess:
    os: OsName
    role: str  # what the machine loses with it, for the error message
    name: str
    exe: str
    cmdline: tuple[str, ...]


def _entries(os: OsName, role: str, name: str, exes: tuple[str, ...],
             *args: str) -> list[CriticalProcess]:
    return [CriticalProcess(os, role, name, exe, (exe, *args)) for exe in exes]


CRITICAL_PROCESSES: tuple[CriticalProcess, ...] = tuple(
    # -- Linux --
    _entries("linux", "init", "systemd", ("/usr/lib/systemd/systemd", "/lib/systemd/systemd"),
             "--system", "--deserialize", "31")
    + _entries("linux", "init", "init", ("/sbin/init", "/usr/sbin/init"))
    + _entries("linux", "the system journal", "systemd-journal",
               ("/usr/lib/systemd/systemd-journald", "/lib/systemd/systemd-journald"))
    + _entries("linux", "logins", "systemd-logind",
               ("/usr/lib/systemd/systemd-logind", "/lib/systemd/systemd-logind"))
    + _entries("linux", "device management", "systemd-udevd",
               ("/usr/lib/systemd/systemd-udevd", "/lib/systemd/systemd-udevd"))
    + _entries("linux", "remote access", "sshd", ("/usr/sbin/sshd",), "-D")
    + _entries("linux", "the system bus", "dbus-daemon", ("/usr/bin/dbus-daemon",),
               "--system", "--address=systemd:", "--nofork", "--systemd-activation")
    + _entries("linux", "the system bus", "dbus-broker", ("/usr/bin/dbus-broker",),
               "--scope", "system")
    + _entries("linux", "the login screen", "gdm3", ("/usr/sbin/gdm3",))
    + _entries("linux", "the login screen", "gdm", ("/usr/sbin/gdm",))
    + _entries("linux", "the login screen", "sddm", ("/usr/bin/sddm",))
    + _entries("linux", "the login screen", "lightdm", ("/usr/sbin/lightdm",))
    + _entries("linux", "the display server", "Xorg", ("/usr/lib/xorg/Xorg",), "-nolisten", "tcp")
    + _entries("linux", "the desktop", "gnome-shell", ("/usr/bin/gnome-shell",))
    + _entries("linux", "console logins", "login", ("/usr/bin/login", "/bin/login"), "--")
    + _entries("linux", "authorisation", "polkitd", ("/usr/lib/polkit-1/polkitd",),
               "--no-debug")
    + _entries("linux", "the network", "NetworkManager", ("/usr/sbin/NetworkManager",),
               "--no-daemon")
    + _entries("linux", "the Warden agent", "warden-agent", ("/usr/local/bin/warden-agent",
                                                              "/usr/bin/warden-agent"), "run")
    + _entries("linux", "the Warden agent's Python", "python3",
               ("/usr/bin/python3.11", "/usr/local/bin/python3.11"),
               "/usr/local/bin/warden-agent", "run")
    # -- macOS --
    + _entries("macos", "init", "launchd", ("/sbin/launchd",))
    + _entries("macos", "the display server", "WindowServer",
               ("/System/Library/PrivateFrameworks/SkyLight.framework/Resources/WindowServer",),
               "-daemon")
    + _entries("macos", "the login screen", "loginwindow",
               ("/System/Library/CoreServices/loginwindow.app/Contents/MacOS/loginwindow",),
               "console")
    + _entries("macos", "the desktop", "Finder",
               ("/System/Library/CoreServices/Finder.app/Contents/MacOS/Finder",))
    + _entries("macos", "the desktop", "Dock",
               ("/System/Library/CoreServices/Dock.app/Contents/MacOS/Dock",))
    + _entries("macos", "remote access", "sshd", ("/usr/sbin/sshd",), "-i")
    + _entries("macos", "accounts", "opendirectoryd", ("/usr/libexec/opendirectoryd",))
    + _entries("macos", "the Warden agent", "warden-agent", ("/usr/local/bin/warden-agent",),
               "run")
    + _entries("macos", "the Warden agent's Python", "Python",
               ("/Library/Frameworks/Python.framework/Versions/3.11/Resources/Python.app/"
                "Contents/MacOS/Python", "/usr/local/bin/python3.11"),
               "/usr/local/bin/warden-agent", "run")
    # -- Windows --
    + _entries("windows", "the session manager", "smss.exe", ("C:\\Windows\\System32\\smss.exe",))
    + _entries("windows", "the Windows subsystem", "csrss.exe",
               ("C:\\Windows\\System32\\csrss.exe",), "ObjectDirectory=\\Windows")
    + _entries("windows", "start-up", "wininit.exe", ("C:\\Windows\\System32\\wininit.exe",))
    + _entries("windows", "logins", "winlogon.exe", ("C:\\Windows\\System32\\winlogon.exe",))
    + _entries("windows", "services", "services.exe", ("C:\\Windows\\System32\\services.exe",))
    + _entries("windows", "authentication", "lsass.exe", ("C:\\Windows\\System32\\lsass.exe",))
    + _entries("windows", "services", "svchost.exe", ("C:\\Windows\\System32\\svchost.exe",),
               "-k", "netsvcs", "-p")
    + _entries("windows", "the desktop", "explorer.exe", ("C:\\Windows\\explorer.exe",))
    + _entries("windows", "the display", "dwm.exe", ("C:\\Windows\\System32\\dwm.exe",))
    + _entries("windows", "the login screen", "LogonUI.exe",
               ("C:\\Windows\\System32\\LogonUI.exe",))
    + _entries("windows", "remote access", "sshd.exe",
               ("C:\\Windows\\System32\\OpenSSH\\sshd.exe",))
    + _entries("windows", "the Warden agent's Python", "python.exe",
               ("C:\\Program Files\\Python311\\python.exe",),
               "C:\\Program Files\\Warden\\warden-agent-service.py")
)


@dataclass(frozen=True)
class Hit:
    process: CriticalProcess
    matched: str  # the signature that matched, as findings name it

    def __str__(self) -> str:
        return (f"{self.process.name} ({self.process.exe}, {self.process.role} on "
                f"{self.process.os}), matched by {self.matched}")


def critical_hits(app: AppDefinition, oses: tuple[OsName, ...]) -> Iterator[Hit]:
    """The critical processes on `oses` that a blocking rule for `app` would end."""
    for os_name in oses:
        engine = Engine(_blocking_bundle(app), HostContext(os=os_name))
        for process in CRITICAL_PROCESSES:
            if process.os != os_name:
                continue
            observation = ProcessObservation(pid=2, name=process.name, create_time=0.0,
                                             exe=process.exe, cmdline=process.cmdline,
                                             username="root")
            for finding in engine.evaluate(observation):
                yield Hit(process, finding.matched)


def wildcard_only(app: AppDefinition) -> list[str]:
    """The app's process names and exe globs that name nothing but wildcards (`*`, `/**`,
    `C:\\**`): they would reach processes no table can list."""
    process = app.signatures.process
    found = []
    for value in (*process.names, *process.exe_globs):
        text = value[2:] if len(value) > 1 and value[1] == ":" else value
        if set(text) <= _WILDCARDS:
            found.append(value)
    return found


def _blocking_bundle(app: AppDefinition) -> dict[str, Any]:
    return {
        "version": "critical-process-check",
        "policy": {"name": "check", "description": "", "mode": "enforce", "scope": {}},
        "rules": {app.id: {"verdict": "deny", "action": "terminate", "alternative": None,
                           "message": "", "exceptions": []}},
        "apps": {app.id: compact_app(app)},
    }
