"""A policy workflow without surprises: every problem in one pass, a lapsed exception is a
warning (never an error), `policy show` lists exceptions, and `policy test` tries a host,
its groups and its OS and says what the agent will really do."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.loader import load_catalog, load_policy, parse_policy, policy_warnings

TODAY = dt.date(2026, 11, 28)

# Four mistakes of three kinds: a bad mode, an app id typo, a bad date, an unknown alternative.
MANY_MISTAKES = """\
name: t
mode: strict
rules:
  - app: telegramm
    verdict: deny
    exceptions:
      - hosts: [pc-1]
        expires: next week
  - app: signal
    verdict: allow
    alternative: pigeon
"""

STRICT = """\
name: strict
mode: enforce
scope:
  os: [linux, windows]
rules:
  - app: telegram
    verdict: deny
    action: terminate
    alternative: signal
    exceptions:
      - hosts: [pc-1]
        expires: 2026-01-31
        reason: old pilot
      - groups: [lab]
        expires: 2999-01-01
        reason: research
  - app: signal
    verdict: allow
"""


def _warden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_every_problem_is_reported_in_one_pass() -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(MANY_MISTAKES, "p.yaml", load_catalog(), TODAY)
    found = [(issue.line, issue.field) for issue in raised.value.issues]
    assert found == [(2, "mode"), (4, "rules[0].app"), (8, "rules[0].exceptions[0].expires"),
                     (11, "rules[1].alternative")]
    assert "unknown app id 'telegramm'" in str(raised.value)


def test_a_lapsed_exception_is_a_warning_and_the_policy_still_validates(
    tmp_path: Path
) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(STRICT)
    # Valid the day before the pilot's exception lapses, and every day after it.
    for today in (dt.date(2026, 1, 30), dt.date(2026, 2, 1), dt.date(2027, 1, 1)):
        policy = load_policy(path, load_catalog(), today=today)
    warnings = policy_warnings(STRICT, str(path), policy, dt.date(2026, 2, 1))
    assert [(w.line, w.field) for w in warnings] == [(12, "rules[0].exceptions[0].expires")]
    assert "lapsed on 2026-01-31" in str(warnings[0])
    assert policy_warnings(STRICT, str(path), policy, dt.date(2026, 1, 30)) == []
    result = _warden("policy", "validate", str(path))
    assert result.returncode == 0, result.stderr
    assert f"warning: {path}:12: rules[0].exceptions[0].expires: exception lapsed" \
        in result.stderr
    assert f"ok: {path}" in result.stdout


def test_cli_validate_lists_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.yaml"
    path.write_text(MANY_MISTAKES)
    result = _warden("policy", "validate", str(path))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4, result.stderr


def test_policy_show_lists_exceptions(tmp_path: Path) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(STRICT)
    result = _warden("policy", "show", str(path))
    assert result.returncode == 0, result.stderr
    assert "except hosts pc-1 until 2026-01-31 (lapsed): old pilot" in result.stdout
    assert "except groups lab until 2999-01-01: research" in result.stdout


@pytest.mark.parametrize(("options", "verdict", "agent_does"), [
    # (what the machine is, the verdict, what the agent really does)
    (["--process", "telegram-desktop"], "deny", ["notifies the user", "terminates the process"]),
    (["--process", "telegram-desktop", "--group", "lab"], "excepted",
     ["nothing: an exception"]),
    (["--process", "telegram-desktop", "--group", "other", "--group", "lab"], "excepted",
     ["nothing: an exception"]),
    # pc-1's exception has lapsed: the rule applies again.
    (["--process", "telegram-desktop", "--host", "pc-1"], "deny",
     ["notifies the user", "terminates the process"]),
    (["--process", "telegram-desktop", "--os", "macos"], "out_of_scope",
     ["nothing: the policy's scope leaves this machine out"]),
    # An install is never "terminated": the user is told.
    (["--package", "telegram-desktop"], "deny",
     ["notifies the user", "does not terminate anything: an installed copy"]),
], ids=["deny", "group-excepted", "one-of-groups", "lapsed-host", "os-out-of-scope",
        "installed"])
def test_policy_test_tries_hosts_groups_and_os(
    tmp_path: Path, options: list[str], verdict: str, agent_does: list[str]
) -> None:
    path = tmp_path / "strict.yaml"
    path.write_text(STRICT)
    result = _warden("policy", "test", str(path), *options, "--json")
    assert result.returncode == 0, result.stderr
    [finding] = json.loads(result.stdout)["findings"]
    assert finding["verdict"] == verdict
    assert len(finding["agent_does"]) == len(agent_does)
    for said, expected in zip(finding["agent_does"], agent_does, strict=True):
        assert said.startswith(expected), finding["agent_does"]
    text = _warden("policy", "test", str(path), *options).stdout
    assert f"agent does   {agent_does[0]}" in text


@pytest.mark.parametrize("bad_id", ["[null, null]", "{}", "7"])
def test_a_local_app_whose_id_is_not_text_is_an_error_not_a_crash(bad_id: str) -> None:
    """Found by the API fuzz run: the one-pass reference check read any id as a set member."""
    text = (f"name: x\napps:\n- id: {bad_id}\n  name: x\nrules:\n- app: ''\n"
            "  verdict: deny\n")
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "x.yaml", load_catalog())
    assert any(issue.field.startswith("apps[0].id") for issue in caught.value.issues)
