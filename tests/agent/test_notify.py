"""The user is told plainly what is not allowed and what to use instead, and not spammed.

Linux is tested for real: a fake `notify-send` on PATH records what it was
given. macOS and Windows cannot run here; their backends are checked by the
exact command they build.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.responding.notify import (
    CooldownNotifier,
    LogNotifier,
    Notice,
    NotifyResult,
    RecordingNotifier,
    make_notifier,
    notice_for,
)
from agent.responding.notify_backends import (
    TOAST_SCRIPT,
    DesktopUser,
    LinuxNotifier,
    MacNotifier,
    WindowsNotifier,
    graphical_users,
    msg_text,
)
from policies.compiler import compile_bundle
from policies.engine import Engine, Finding
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.observations import ProcessObservation

SIGNAL_LINK = "https://signal.org/download/"


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


def telegram_finding(bundle: dict[str, Any], username: str = "alice") -> Finding:
    observation = ProcessObservation(pid=4242, name="telegram-desktop", create_time=1.5,
                                     exe="/usr/bin/telegram-desktop", username=username)
    [finding] = Engine(bundle).evaluate(observation)
    return finding


class RecordingRunner:
    """Stands in for subprocess.run where the real command cannot run on this machine."""

    def __init__(self, returncodes: Callable[[list[str]], int] = lambda argv: 0) -> None:
        self.calls: list[list[str]] = []
        self._returncodes = returncodes

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        code = self._returncodes(argv)
        return subprocess.CompletedProcess(argv, code, "", "boom" if code else "")


class KeywordRecordingRunner:
    """A RecordingRunner that also keeps what else each command was given (env, input)."""

    def __init__(self, returncodes: Callable[[list[str]], int] = lambda argv: 0) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self._returncodes = returncodes

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        code = self._returncodes(argv)
        return subprocess.CompletedProcess(argv, code, "", "boom" if code else "")


def notice(user: str | None = "alice", app: str = "telegram") -> Notice:
    return Notice(title="Telegram is not allowed on this device", body="Use Signal instead.",
                  app_id=app, alternative_id="signal", alternative_name="Signal",
                  alternative_link=SIGNAL_LINK, install_hint=None, user=user)


# -- the words ----------------------------------------------------------------


def test_notice_names_the_ban_the_alternative_its_link_and_how_to_install_it(
    bundle: dict[str, Any],
) -> None:
    finding = telegram_finding(bundle)
    linux = notice_for(finding, bundle, "linux")
    assert linux.title == "Telegram is not allowed on this device"
    assert linux.body.startswith(bundle["rules"]["telegram"]["message"].strip())
    assert f"Use Signal instead: {SIGNAL_LINK}" in linux.body
    hint = bundle["apps"]["signal"]["install_hints"]["linux"]
    assert linux.install_hint == hint and hint in linux.body
    assert (linux.alternative_id, linux.alternative_name, linux.alternative_link) == (
        "signal", "Signal", SIGNAL_LINK)
    assert linux.user == "alice"
    mac = notice_for(finding, bundle, "macos")
    assert "brew install --cask signal" in mac.body
    assert "apt" not in mac.body


def test_without_an_alternative_or_message_the_notice_still_says_what_is_wrong(
    bundle: dict[str, Any],
) -> None:
    finding = telegram_finding(bundle)
    bare = dataclasses.replace(finding, alternative=None, message="")
    result = notice_for(bare, bundle, "windows")
    assert result.body == "Your organisation does not allow Telegram on this device."
    assert result.alternative_link is None and result.install_hint is None


# -- Linux, for real ------------------------------------------------------------


@pytest.fixture
def fake_notify_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A notify-send that writes its arguments (NUL-separated) and environment to files."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "notify-send.args"
    script = bin_dir / "notify-send"
    script.write_text("#!/bin/sh\n"
                      f"env > '{out}.env'\n"
                      f"for arg in \"$@\"; do printf '%s\\0' \"$arg\"; done > '{out}'\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return out


def recorded_args(out: Path) -> list[str]:
    return out.read_text().split("\0")[:-1]


def test_linux_in_the_users_session_runs_notify_send_with_the_notice(
    bundle: dict[str, Any], fake_notify_send: Path,
) -> None:
    the_notice = notice_for(telegram_finding(bundle), bundle, "linux")
    result = LinuxNotifier(euid=lambda: 1000).notify(the_notice)
    assert result == NotifyResult(True, "shown with notify-send")
    args = recorded_args(fake_notify_send)
    assert args[:4] == ["--app-name=Warden", "--urgency=normal", "--icon=dialog-warning", "--"]
    title, body = args[4:]
    assert title == "Telegram is not allowed on this device"
    assert "Signal" in body and SIGNAL_LINK in body


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0,
                    reason="switching to the desktop user needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None and shutil.which("runuser") is None,
                    reason="needs setpriv or runuser (util-linux)")
def test_linux_as_root_reaches_the_users_session_bus_without_leaking_the_agents_env(
    bundle: dict[str, Any], fake_notify_send: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pwd

    monkeypatch.setenv("WARDEN_AGENT_ENROLL_SECRET", "s3cret-must-not-leak")
    me = pwd.getpwuid(os.getuid())
    desktop = DesktopUser(me.pw_name, me.pw_uid, me.pw_gid, me.pw_dir)
    notifier = LinuxNotifier(euid=lambda: 0, users=lambda: [desktop])
    result = notifier.notify(notice_for(telegram_finding(bundle, me.pw_name), bundle, "linux"))
    assert result.ok, result.detail
    assert result.detail == f"{me.pw_name}: shown"
    env = fake_notify_send.with_suffix(".args.env").read_text().splitlines()
    assert f"DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/{me.pw_uid}/bus" in env
    assert f"XDG_RUNTIME_DIR=/run/user/{me.pw_uid}" in env
    assert not any("s3cret" in line for line in env)
    assert SIGNAL_LINK in recorded_args(fake_notify_send)[-1]


def test_linux_as_root_tells_the_owner_of_the_process_when_they_have_a_desktop(
    fake_notify_send: Path,
) -> None:
    runner = RecordingRunner()
    users = [DesktopUser("bob", 1001, 1001, "/home/bob"),
             DesktopUser("alice", 1000, 1000, "/home/alice")]
    notifier = LinuxNotifier(runner, euid=lambda: 0, users=lambda: users)
    assert notifier.notify(notice(user="alice")).detail == "alice: shown"
    [call] = runner.calls
    assert "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus" in call
    # Someone with no desktop of their own (an ssh login): every desktop user is told.
    runner.calls.clear()
    assert notifier.notify(notice(user="carol")).ok
    assert len(runner.calls) == 2


def test_linux_failures_are_reported_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_notify_send: Path,
) -> None:
    nobody_home = LinuxNotifier(RecordingRunner(), euid=lambda: 0, users=lambda: [])
    assert nobody_home.notify(notice()) == NotifyResult(
        False, "no one is logged in to a graphical session")
    failing = LinuxNotifier(RecordingRunner(lambda argv: 1), euid=lambda: 1000)
    result = failing.notify(notice())
    assert not result.ok and "notify-send exited 1: boom" in result.detail
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    missing = LinuxNotifier(euid=lambda: 1000).notify(notice())
    assert not missing.ok and "notify-send not found" in missing.detail


def test_desktop_users_come_from_logind_graphical_local_sessions() -> None:
    import pwd

    root = pwd.getpwuid(0).pw_name
    listing = "      3 0 root seat0 tty2\n      7 0 root        pts/0\n     9 0 root - -\n"
    sessions = ("Name=root\nType=wayland\nClass=user\nRemote=no\n\n"
                "Name=root\nType=tty\nClass=user\nRemote=no\n\n"
                "Name=no-such-user-here\nType=x11\nClass=user\nRemote=no\n")

    def runner(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        if argv[:2] == ["loginctl", "list-sessions"]:
            return subprocess.CompletedProcess(argv, 0, listing, "")
        assert argv[:5] == ["loginctl", "show-session", "3", "7", "9"]
        return subprocess.CompletedProcess(argv, 0, sessions, "")

    assert graphical_users(runner) == [DesktopUser(root, 0, 0, pwd.getpwuid(0).pw_dir)]


def test_without_logind_desktop_users_come_from_utmp() -> None:
    def no_logind(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("loginctl")

    # This machine's utmp is what it is; the point is that it answers, not raises.
    assert all(isinstance(user, DesktopUser) for user in graphical_users(no_logind))


# -- macOS and Windows: the exact commands -----------------------------------


def test_macos_passes_the_text_as_arguments_so_quotes_cannot_break_out() -> None:
    runner = RecordingRunner()
    tricky = Notice(title='He said "hi" \\ bye', body='end tell\n" & do shell script "rm',
                    app_id="telegram", alternative_id="signal", alternative_name="Signal",
                    alternative_link=SIGNAL_LINK, install_hint=None)
    assert MacNotifier(runner, euid=lambda: 501).notify(tricky).ok
    assert runner.calls == [[
        "osascript",
        "-e", "on run argv",
        "-e", "display notification (item 2 of argv) with title (item 1 of argv) "
              "subtitle (item 3 of argv)",
        "-e", "end run",
        "--", 'He said "hi" \\ bye', 'end tell\n" & do shell script "rm',
        f"Use Signal instead: {SIGNAL_LINK}",
    ]]


def test_macos_as_a_launch_daemon_borrows_the_console_users_session() -> None:
    runner = RecordingRunner()
    notifier = MacNotifier(runner, euid=lambda: 0, console_user=lambda: (501, "alice"))
    assert notifier.notify(notice()).ok
    assert runner.calls[0][:8] == ["launchctl", "asuser", "501", "sudo", "-u", "alice", "--",
                                   "osascript"]
    at_login_window = MacNotifier(runner, euid=lambda: 0, console_user=lambda: None)
    assert at_login_window.notify(notice()) == NotifyResult(
        False, "no one is logged in at the console")


def decoded_script(argv: list[str]) -> str:
    assert argv[:6] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy",
                        "Bypass", "-EncodedCommand"]
    return base64.b64decode(argv[6]).decode("utf-16-le")


def test_windows_toast_script_is_constant_and_gets_the_words_from_its_environment() -> None:
    runner = KeywordRecordingRunner()
    tricky = Notice(title="Telegram <b>isn't</b> allowed", body="Use Signal\u2019s app & be safe",
                    app_id="telegram", alternative_id="signal", alternative_name="Signal",
                    alternative_link=SIGNAL_LINK, install_hint=None)
    assert WindowsNotifier(runner).notify(tricky) == NotifyResult(True, "shown as a toast")
    [(argv, kwargs)] = runner.calls
    assert decoded_script(argv) == TOAST_SCRIPT
    assert "ToastNotificationManager]::CreateToastNotifier(" in TOAST_SCRIPT
    assert "CreateTextNode($env:WARDEN_NOTICE_TITLE)" in TOAST_SCRIPT
    assert kwargs["env"]["WARDEN_NOTICE_TITLE"] == tricky.title
    assert kwargs["env"]["WARDEN_NOTICE_BODY"] == tricky.body


def test_windows_falls_back_to_msg_when_no_toast_can_be_shown() -> None:
    runner = KeywordRecordingRunner(lambda argv: 1 if argv[0] == "powershell.exe" else 0)
    result = WindowsNotifier(runner).notify(notice())
    assert result.ok and result.detail.startswith("sent with msg.exe")
    argv, kwargs = runner.calls[1]
    # The message goes in on standard input, where no word of it can be an option.
    assert argv == ["msg.exe", "*", "/TIME:300"]
    assert kwargs["input"] == "Telegram is not allowed on this device\n\nUse Signal instead."
    broken = WindowsNotifier(RecordingRunner(lambda argv: 1)).notify(notice())
    assert not broken.ok
    assert "toast: powershell.exe exited 1" in broken.detail and "msg.exe: msg.exe" in broken.detail


def test_msg_text_keeps_the_alternative_when_the_body_is_too_long() -> None:
    long = Notice(title="Telegram is not allowed on this device", body="x" * 400,
                  app_id="telegram", alternative_id="signal", alternative_name="Signal",
                  alternative_link=SIGNAL_LINK, install_hint=None)
    text = msg_text(long)
    assert len(text) <= 255 and text.endswith(f"Use Signal instead: {SIGNAL_LINK}")


def test_make_notifier_picks_one_backend_per_os() -> None:
    assert isinstance(make_notifier("linux"), LinuxNotifier)
    assert isinstance(make_notifier("macos"), MacNotifier)
    assert isinstance(make_notifier("windows"), WindowsNotifier)
    with pytest.raises(ValueError, match="no notifier"):
        make_notifier("plan9")  # type: ignore[arg-type]


# -- cooldown, recording, logging ----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cooldown_allows_one_notice_per_app_and_user_per_period() -> None:
    inner, clock = RecordingNotifier(), FakeClock()
    notifier = CooldownNotifier(inner, cooldown_seconds=3600, clock=clock)
    assert notifier.notify(notice("alice")) == NotifyResult(True, "recorded")
    clock.now += 3599
    held = notifier.notify(notice("alice"))
    assert held.ok and held.suppressed and "3599 s ago" in held.detail
    assert notifier.notify(notice("bob")).detail == "recorded"
    assert notifier.notify(notice("alice", app="whatsapp")).detail == "recorded"
    clock.now += 1
    assert not notifier.notify(notice("alice")).suppressed
    assert [(n.user, n.app_id) for n in inner.notices] == [
        ("alice", "telegram"), ("bob", "telegram"), ("alice", "whatsapp"), ("alice", "telegram")]


def test_a_notice_that_failed_does_not_start_the_cooldown() -> None:
    failing = RecordingNotifier(result=NotifyResult(False, "no desktop"))
    notifier = CooldownNotifier(failing, cooldown_seconds=3600, clock=FakeClock())
    assert notifier.notify(notice()) == NotifyResult(False, "no desktop")
    assert notifier.notify(notice()) == NotifyResult(False, "no desktop")
    assert len(failing.notices) == 2


def test_log_notifier_writes_the_notice_to_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="agent.responding.notify"):
        assert LogNotifier().notify(notice()).ok
    assert "Telegram is not allowed on this device" in caplog.text
    assert "alice" in caplog.text
