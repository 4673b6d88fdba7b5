"""The service files, filled in: systemd unit, env file, launchd plist, Windows launcher and script.

The reviewed templates live in `agent/service/files/`; every value put into
one is checked or quoted for the language of that file, so a path or a
setting can never break out of its string. Installing is agent/service/install.py.
"""

from __future__ import annotations

import re
import site
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from policies.vocabulary import OsName

SYSTEMD_ENV_FILE = "/etc/warden/agent.env"
MACOS_LOG_PATH = "/Library/Logs/Warden/agent.log"
WINDOWS_SCRIPT_NAME = "install-warden-agent.ps1"
WINDOWS_LAUNCHER_TEMPLATE = "warden-agent-service.py.in"
STATE_DIR_VAR = "WARDEN_AGENT_STATE_DIR"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


_TEMPLATES = Path(__file__).parent / "files"


def _template(name: str) -> str:
    return (_TEMPLATES / name).read_text(encoding="utf-8")


def _fill(template: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    if "{{" in template:
        leftover = template[template.index("{{"):][:40]
        raise ValueError(f"unfilled placeholder in service template: {leftover}")
    return template


def _single_line(value: str, what: str) -> str:
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        raise ValueError(f"{what} contains a control character: {value!r}")
    return value


def _systemd_word(value: str, what: str) -> str:
    """One word of a unit-file setting: '%' escaped (specifiers), quoted if it has spaces."""
    value = _single_line(value, what).replace("%", "%%")
    if re.search(r'[\s"\'\\;]', value) or not value:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def absolute_path(path: str, os_name: OsName) -> str:
    pure = PureWindowsPath(path) if os_name == "windows" else PurePosixPath(path)
    if not pure.is_absolute():
        raise ValueError(f"{path!r} is not an absolute path; the service manager needs one")
    return path


def render_systemd_unit(exe_path: str, state_dir: str, env_file: str = SYSTEMD_ENV_FILE) -> str:
    """The hardened unit; see the comments in agent/service/files/warden-agent.service."""
    exe = _systemd_word(absolute_path(exe_path, "linux"), "exe path")
    state = _systemd_word(absolute_path(state_dir, "linux"), "state dir")
    return _fill(_template("warden-agent.service"), {
        "EXEC_START": f"{exe} run",
        "ENV_FILE": _systemd_word(absolute_path(env_file, "linux"), "env file"),
        "STATE_DIR": state,
        "STATE_DIR_ENV": _systemd_word(f"{STATE_DIR_VAR}={state_dir}", "state dir"),
    })


def render_env_file(env: Mapping[str, str]) -> str:
    """A systemd EnvironmentFile: every value double-quoted, shell specials escaped."""
    lines = ["# Warden agent settings, read by warden-agent.service. Root only (0600)."]
    for name, value in sorted(env.items()):
        if not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        value = _single_line(value, name)
        escaped = re.sub(r'([\\"$`])', r"\\\1", value)
        lines.append(f'{name}="{escaped}"')
    return "\n".join(lines) + "\n"


def render_launchd_plist(
    exe_path: str, state_dir: str, env: Mapping[str, str], log_path: str = MACOS_LOG_PATH
) -> str:
    """The LaunchDaemon plist, from the template, through plistlib (so always valid XML)."""
    import plistlib  # here: its XML parser is memory every running agent would carry

    plist = plistlib.loads(_template("com.warden.agent.plist").encode("utf-8"))
    plist["ProgramArguments"] = [absolute_path(exe_path, "macos"), "run"]
    plist["EnvironmentVariables"] = {**dict(sorted(env.items())),
                                     STATE_DIR_VAR: absolute_path(state_dir, "macos")}
    plist["StandardOutPath"] = plist["StandardErrorPath"] = absolute_path(log_path, "macos")
    return plistlib.dumps(plist, sort_keys=False).decode("utf-8")


def _powershell_literal(value: str) -> str:
    # PowerShell treats the typographic single quotes like ' in a '...' string.
    return "'" + re.sub("(['\u2018\u2019\u201a\u201b])", r"\1\1", _single_line(value, "path")) + "'"


@dataclass(frozen=True)
class WindowsHost:
    """The python.exe the Windows service runs, and the package directories it adds.

    In a virtual environment, Scripts\\python.exe is a redirector that starts the
    base interpreter as a child process, which the SCM cannot talk to; so the
    service runs the base interpreter with -S (no machine-wide site-packages)
    and the launcher adds the environment's site-packages itself.
    """

    python: str
    site_dirs: tuple[str, ...] = ()

    @classmethod
    def current(cls) -> WindowsHost:
        if sys.prefix == sys.base_prefix:
            return cls(sys.executable)
        base = getattr(sys, "_base_executable", sys.executable)
        return cls(base, tuple(path for path in site.getsitepackages()
                               if PureWindowsPath(path).name.lower() == "site-packages"
                               or PurePosixPath(path).name == "site-packages"))

    @property
    def flags(self) -> str:
        return "-S" if self.site_dirs else ""

    def command_line(self, launcher: str) -> str:
        return subprocess.list2cmdline([self.python, *self.flags.split(), launcher])


def render_windows_launcher(host: WindowsHost, launcher: str) -> str:
    """warden-agent-service.py: adds the agent's packages, then runs agent.service.windows."""
    for directory in host.site_dirs:
        _single_line(directory, "site-packages directory")
    return _fill(_template(WINDOWS_LAUNCHER_TEMPLATE), {
        "COMMAND_LINE": _single_line(host.command_line(launcher), "command line"),
        "SITE_DIRS": repr(list(host.site_dirs)),
    })


def render_windows_install_script(host: WindowsHost, launcher: str,
                                  state_dir: str | None = None) -> str:
    """The PowerShell install recipe (pre-flight, New-Service, failure actions, private ACLs)."""
    state = (_powershell_literal(absolute_path(state_dir, "windows")) if state_dir
             else "(Join-Path $env:ProgramData 'Warden\\state')")
    return _fill(_template(WINDOWS_SCRIPT_NAME), {
        "PYTHON": _powershell_literal(absolute_path(host.python, "windows")),
        "PYTHON_FLAGS": _powershell_literal(host.flags),
        "LAUNCHER": _powershell_literal(absolute_path(launcher, "windows")),
        "STATE_DIR": state,
    })
