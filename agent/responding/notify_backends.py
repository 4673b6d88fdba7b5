"""Desktop notifiers, one per OS; `agent.responding.notify.make_notifier` picks one at start-up.

Each backend only lays a `Notice` out as a command and runs it through the
injected runner, so the macOS and Windows ones (which this machine cannot run)
stay thin enough to check by the exact command they build.

The agent usually runs as root or SYSTEM, outside anyone's desktop session, so
each backend also has to reach the logged-in user: on Linux by running
notify-send as that user against their session bus, on macOS through
`launchctl asuser`, on Windows with a `msg *` fallback that crosses sessions.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psutil

from agent.responding.notify_types import Notice, NotifyResult, Runner

COMMAND_TIMEOUT = 15.0
_GRAPHICAL_SESSION_TYPES = {"x11", "wayland", "mir"}


def run_command(
    runner: Runner, args: Sequence[str], timeout: float = COMMAND_TIMEOUT,
    env: dict[str, str] | None = None, stdin: str | None = None,
) -> tuple[bool, str]:
    """Run one command; (succeeded, what happened). Never raises for a failed command."""
    try:
        result = runner(list(args), capture_output=True, text=True, timeout=timeout,
                        check=False, env=env, input=stdin)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        return False, f"{os.path.basename(args[0])}: {exc}"
    if result.returncode != 0:
        stderr = (result.stderr or "").strip().replace("\n", " ")[:300]
        return False, f"{os.path.basename(args[0])} exited {result.returncode}: {stderr}"
    return True, f"{os.path.basename(args[0])} ok"


# -- Linux ------------------------------------------------------------------


@dataclass(frozen=True)
class DesktopUser:
    name: str
    uid: int
    gid: int
    home: str


def graphical_users(runner: Runner = subprocess.run) -> list[DesktopUser]:
    """People logged in to a local desktop: from logind, else from utmp (psutil.users)."""
    names = _logind_desktop_users(runner)
    if names is None:
        # No logind (containers, non-systemd distributions): utmp is all there is.
        # Local logins have no host, or an X display name as their host/terminal.
        names = [user.name for user in psutil.users()
                 if not user.host or user.host.startswith(":")
                 or (user.terminal or "").startswith(":")]
    return _resolve_accounts(names)


def _logind_desktop_users(runner: Runner) -> list[str] | None:
    try:
        listing = runner(["loginctl", "list-sessions", "--no-legend"], capture_output=True,
                         text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return None
    ids = [line.split()[0] for line in listing.stdout.splitlines() if line.strip()]
    if not ids:
        return []
    try:
        shown = runner(["loginctl", "show-session", *ids, "--property=Name", "--property=Type",
                        "--property=Class", "--property=Remote"],
                       capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if shown.returncode != 0:
        return None
    names = []
    # One block of Key=Value lines per session, separated by blank lines.
    for block in shown.stdout.split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if (props.get("Type") in _GRAPHICAL_SESSION_TYPES and props.get("Class") == "user"
                and props.get("Remote") != "yes" and props.get("Name")):
            names.append(props["Name"])
    return names


def _resolve_accounts(names: Sequence[str]) -> list[DesktopUser]:
    import pwd  # POSIX only; this backend never runs on Windows.

    users: dict[str, DesktopUser] = {}
    for name in names:
        if name in users:
            continue
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        users[name] = DesktopUser(name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    return list(users.values())


def _euid() -> int:
    return os.geteuid()


class LinuxNotifier:
    """notify-send; as root, run as each desktop user against their session bus."""

    def __init__(
        self,
        runner: Runner = subprocess.run,
        *,
        users: Callable[[], list[DesktopUser]] | None = None,
        euid: Callable[[], int] = _euid,
    ) -> None:
        self._runner = runner
        self._users = users or (lambda: graphical_users(runner))
        self._euid = euid

    def notify(self, notice: Notice) -> NotifyResult:
        notify_send = shutil.which("notify-send")
        if notify_send is None:
            return NotifyResult(False, "notify-send not found: install libnotify-bin "
                                       "(Debian/Ubuntu) or libnotify (Fedora, Arch)")
        # "--" so that a body starting with "-" is not read as an option.
        command = [notify_send, "--app-name=Warden", "--urgency=normal",
                   "--icon=dialog-warning", "--", notice.title, notice.body]
        if self._euid() != 0:
            # Started inside someone's session (e.g. `warden-agent watch`): it is theirs.
            ok, detail = run_command(self._runner, command)
            return NotifyResult(ok, "shown with notify-send" if ok else detail)

        users = self._users()
        targets = [user for user in users if user.name == notice.user] or users
        if not targets:
            return NotifyResult(False, "no one is logged in to a graphical session")
        outcomes = []
        for user in targets:
            ok, detail = run_command(self._runner, [*_as_user(user), *command])
            outcomes.append((ok, f"{user.name}: {'shown' if ok else detail}"))
        return NotifyResult(any(ok for ok, _ in outcomes), "; ".join(d for _, d in outcomes))


def _as_user(user: DesktopUser) -> list[str]:
    """The command prefix that runs what follows as `user`, on their session bus."""
    runtime_dir = f"/run/user/{user.uid}"
    # `env -i`: a clean environment, so nothing of the agent's own (its enrollment
    # secret among it) leaks into a process the user can inspect.
    env = [shutil.which("env") or "/usr/bin/env", "-i",
           "PATH=/usr/local/bin:/usr/bin:/bin", f"HOME={user.home}", f"USER={user.name}",
           f"LOGNAME={user.name}", f"XDG_RUNTIME_DIR={runtime_dir}",
           f"DBUS_SESSION_BUS_ADDRESS=unix:path={runtime_dir}/bus"]
    setpriv = shutil.which("setpriv")
    if setpriv:
        # setpriv only changes ids: no PAM session, so it works inside the hardened
        # unit with nothing but CAP_SETUID and CAP_SETGID.
        return [setpriv, f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
                "--", *env]
    return [shutil.which("runuser") or "runuser", "-u", user.name, "--", *env]


# -- macOS ------------------------------------------------------------------

# The text travels as arguments, not inside the script, so no quoting of
# AppleScript strings is needed and nothing in a policy message can inject code.
# "--" ends osascript's options, so a text starting with "-" (`-e do shell script`)
# is an argument, not one more statement.
_APPLESCRIPT = (
    "on run argv",
    "display notification (item 2 of argv) with title (item 1 of argv) "
    "subtitle (item 3 of argv)",
    "end run",
)


def _console_user() -> tuple[int, str] | None:
    """The user at the Mac's screen: the owner of /dev/console (root at the login window)."""
    import pwd

    uid = os.stat("/dev/console").st_uid
    return None if uid == 0 else (uid, pwd.getpwuid(uid).pw_name)


class MacNotifier:
    def __init__(
        self,
        runner: Runner = subprocess.run,
        *,
        euid: Callable[[], int] = _euid,
        console_user: Callable[[], tuple[int, str] | None] = _console_user,
    ) -> None:
        self._runner = runner
        self._euid = euid
        self._console_user = console_user

    def notify(self, notice: Notice) -> NotifyResult:
        subtitle = (f"Use {notice.alternative_name} instead: {notice.alternative_link}"
                    if notice.alternative_name and notice.alternative_link else "")
        command = ["osascript"]
        for line in _APPLESCRIPT:
            command += ["-e", line]
        command += ["--", notice.title, notice.body, subtitle]
        if self._euid() == 0:
            # A LaunchDaemon has no GUI session; borrow the console user's.
            console = self._console_user()
            if console is None:
                return NotifyResult(False, "no one is logged in at the console")
            uid, name = console
            command = ["launchctl", "asuser", str(uid), "sudo", "-u", name, "--", *command]
        ok, detail = run_command(self._runner, command)
        return NotifyResult(ok, "shown in Notification Centre" if ok else detail)


# -- Windows ----------------------------------------------------------------

# Windows only shows toasts from registered app ids; PowerShell's is always there.
_TOAST_APP_ID = r"{1AC14E77-02E7-4E5D-B744-2EB1AE5198B7}\WindowsPowerShell\v1.0\powershell.exe"
# A constant script: the notice's words reach it in the environment and become XML
# text nodes, so no policy text is ever PowerShell code or toast markup.
TOAST_TITLE_VARIABLE = "WARDEN_NOTICE_TITLE"
TOAST_BODY_VARIABLE = "WARDEN_NOTICE_BODY"
TOAST_SCRIPT = "\n".join((
    "$ErrorActionPreference = 'Stop'",
    "[Windows.UI.Notifications.ToastNotificationManager, Windows.UI.Notifications,"
    " ContentType = WindowsRuntime] | Out-Null",
    "[Windows.Data.Xml.Dom.XmlDocument, Windows.Data.Xml.Dom.XmlDocument,"
    " ContentType = WindowsRuntime] | Out-Null",
    "$xml = New-Object Windows.Data.Xml.Dom.XmlDocument",
    "$xml.LoadXml('<toast><visual><binding template=\"ToastGeneric\"><text/><text/>"
    "</binding></visual></toast>')",
    "$texts = $xml.GetElementsByTagName('text')",
    f"$texts.Item(0).AppendChild($xml.CreateTextNode($env:{TOAST_TITLE_VARIABLE})) | Out-Null",
    f"$texts.Item(1).AppendChild($xml.CreateTextNode($env:{TOAST_BODY_VARIABLE})) | Out-Null",
    "$toast = [Windows.UI.Notifications.ToastNotification]::new($xml)",
    f"[Windows.UI.Notifications.ToastNotificationManager]::CreateToastNotifier('{_TOAST_APP_ID}')"
    ".Show($toast)",
))
_TOAST_COMMAND = ("powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
                  "-EncodedCommand", base64.b64encode(TOAST_SCRIPT.encode("utf-16-le")).decode())
# msg.exe refuses longer messages.
_MSG_LIMIT = 255


def toast_environment(notice: Notice) -> dict[str, str]:
    """The toast script's environment: the agent's, plus the notice's words.

    NUL is the one character an environment cannot hold; nothing is lost by dropping it.
    """
    return {**os.environ, TOAST_TITLE_VARIABLE: notice.title.replace("\0", ""),
            TOAST_BODY_VARIABLE: notice.body.replace("\0", "")}


class WindowsNotifier:
    """A toast in the user's session; from a service in session 0, `msg *` instead."""

    def __init__(self, runner: Runner = subprocess.run) -> None:
        self._runner = runner

    def notify(self, notice: Notice) -> NotifyResult:
        ok, toast_detail = run_command(self._runner, _TOAST_COMMAND,
                                       env=toast_environment(notice))
        if ok:
            return NotifyResult(True, "shown as a toast")
        # Toasts need the user's desktop; a service runs in session 0 without one.
        # msg.exe reaches every session (Pro and Enterprise editions have it). With no
        # message argument it reads the message from standard input, so no text of the
        # notice can be taken for one of its options (/SERVER:, /V ...).
        ok, msg_detail = run_command(self._runner, ["msg.exe", "*", "/TIME:300"],
                                     stdin=msg_text(notice))
        if ok:
            return NotifyResult(True, "sent with msg.exe (the toast failed: "
                                      f"{toast_detail})")
        return NotifyResult(False, f"toast: {toast_detail}; msg.exe: {msg_detail}")


def msg_text(notice: Notice) -> str:
    text = f"{notice.title}\n\n{notice.body}"
    if len(text) <= _MSG_LIMIT:
        return text
    # Too long: keep what matters, the ban and where to get the alternative.
    short = notice.title
    if notice.alternative_name and notice.alternative_link:
        short += f"\n\nUse {notice.alternative_name} instead: {notice.alternative_link}"
    return short[:_MSG_LIMIT]
