"""A site's own notifier program gets the notice as arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from agent.responding.notify import CommandNotifier, Notice, make_notifier


def test_command_notifier_runs_the_program_with_dashes_title_body_and_link(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    script = tmp_path / "notifier.py"
    script.write_text("import json, sys\n"
                      f"open({str(out)!r}, 'w').write(json.dumps(sys.argv[1:]))\n")
    notifier = make_notifier("linux", command=[sys.executable, str(script)])
    assert isinstance(notifier, CommandNotifier)
    notice = Notice(title="Telegram is not allowed on this device", body="Use Signal instead.",
                    app_id="telegram", alternative_id="signal", alternative_name="Signal",
                    alternative_link="https://signal.org/download/", install_hint="")
    result = notifier.notify(notice)
    assert result.ok, result.detail
    assert json.loads(out.read_text()) == ["--", notice.title, notice.body,
                                           "https://signal.org/download/"]


def test_a_failing_notifier_program_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = CommandNotifier([sys.executable, "-c", "import sys; sys.exit(4)"])
    notice = Notice("t", "b", "telegram", None, None, None, "")
    result = notifier.notify(notice)
    assert not result.ok
    assert "exited 4" in result.detail
