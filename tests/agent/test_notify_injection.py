"""No policy text becomes an option or code in any notifier: it reaches each as data.

Each hostile text below goes through every backend; the command each builds is
checked exactly (macOS and Windows cannot run here), and the Linux one and a
site's own notifier program run for real and report the arguments they got.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.responding.notify import CommandNotifier, Notice
from agent.responding.notify_backends import (
    TOAST_SCRIPT,
    LinuxNotifier,
    MacNotifier,
    WindowsNotifier,
)

HOSTILE = [
    # (what it tries, the text)
    ("an option", "-e do shell script \"touch /tmp/pwned\""),
    ("a long option", "--help"),
    ("a command substitution", "$(touch /tmp/pwned)"),
    ("backticks", "`touch /tmp/pwned`"),
    ("closing an AppleScript string", '" & (do shell script "id") & "'),
    ("closing a PowerShell string", "'; Start-Process calc; '"),
    ("PowerShell's typographic quote", "\u2019; Start-Process calc; \u2018"),
    ("a PowerShell subexpression", "$(Start-Process calc)"),
    ("XML markup", "</text><image src='file:///C:/x.png'/><text>"),
    ("newlines", "line one\nend run\ndo shell script \"id\"\n"),
    ("a msg.exe option", "/SERVER:attacker hello"),
    ("a NUL", "before\0after"),
]
IDS = [what for what, _ in HOSTILE]


def hostile_notice(text: str) -> Notice:
    return Notice(title=text, body=text, app_id="x", alternative_id="signal",
                  alternative_name="Signal", alternative_link=text, install_hint=None,
                  user="alice")


class Recorder:
    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []
        self._fail = fail

    def __call__(self, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append((argv, kwargs))
        return subprocess.CompletedProcess(argv, 1 if argv[0] in self._fail else 0, "", "")


@pytest.mark.parametrize("text", [text for _, text in HOSTILE], ids=IDS)
def test_macos_script_is_constant_and_the_text_follows_dashes(text: str) -> None:
    runner = Recorder()
    assert MacNotifier(runner, euid=lambda: 501).notify(hostile_notice(text)).ok
    [(argv, _)] = runner.calls
    assert argv == [
        "osascript",
        "-e", "on run argv",
        "-e", "display notification (item 2 of argv) with title (item 1 of argv) "
              "subtitle (item 3 of argv)",
        "-e", "end run",
        "--", text, text, f"Use Signal instead: {text}",
    ]


@pytest.mark.parametrize("text", [text for _, text in HOSTILE], ids=IDS)
def test_windows_script_is_constant_and_the_text_travels_in_the_environment(text: str) -> None:
    runner = Recorder(fail=("powershell.exe",))
    WindowsNotifier(runner).notify(hostile_notice(text))
    [(toast, toast_kwargs), (msg, msg_kwargs)] = runner.calls
    assert toast[:6] == ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy",
                         "Bypass", "-EncodedCommand"]
    assert base64.b64decode(toast[6]).decode("utf-16-le") == TOAST_SCRIPT
    clean = text.replace("\0", "")
    assert toast_kwargs["env"]["WARDEN_NOTICE_TITLE"] == clean
    assert toast_kwargs["env"]["WARDEN_NOTICE_BODY"] == clean
    assert msg == ["msg.exe", "*", "/TIME:300"]
    assert msg_kwargs["input"].startswith(text[:100])


@pytest.fixture
def recording_notify_send(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real program named notify-send that writes the arguments it got as JSON."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "args.json"
    script = bin_dir / "notify-send"
    script.write_text(f"#!{sys.executable}\nimport json, sys\n"
                      f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return out


@pytest.mark.skipif(os.name != "posix", reason="notify-send is the Linux backend")
@pytest.mark.parametrize("text", [text for _, text in HOSTILE if "\0" not in text],
                         ids=[what for what, text in HOSTILE if "\0" not in text])
def test_linux_notify_send_gets_the_text_as_operands(text: str,
                                                     recording_notify_send: Path) -> None:
    assert LinuxNotifier(euid=lambda: 1000).notify(hostile_notice(text)).ok
    assert json.loads(recording_notify_send.read_text()) == [
        "--app-name=Warden", "--urgency=normal", "--icon=dialog-warning", "--", text, text]


@pytest.mark.parametrize("text", [text for _, text in HOSTILE if "\0" not in text],
                         ids=[what for what, text in HOSTILE if "\0" not in text])
def test_a_sites_notifier_program_gets_the_text_as_operands(text: str, tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = tmp_path / "notifier.py"
    script.write_text("import json, sys\n"
                      f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    result = CommandNotifier([sys.executable, str(script)]).notify(hostile_notice(text))
    assert result.ok, result.detail
    assert json.loads(out.read_text()) == ["--", text, text, text]
    assert not Path("/tmp/pwned").exists()
