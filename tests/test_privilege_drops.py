"""Every test that drops privileges goes through tests/unprivileged.py.

A test that switches user any other way runs code the other user may not be
able to read (a checkout in a 0700 folder), and passes only where the
checkout happens to be world-readable: the bug of issue 19.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
HELPER = TESTS / "unprivileged.py"
# Calls that change who the process is.
IDENTITY_CALLS = {"setuid", "seteuid", "setreuid", "setresuid", "setgid", "setegid",
                  "setregid", "setresgid", "setgroups", "initgroups"}
# Commands that run another command as someone else.
SWITCH_COMMANDS = {"setpriv", "runuser", "su", "sudo", "doas", "chpst", "setuidgid"}
# subprocess's own switch: Popen(..., user=, group=, extra_groups=).
SWITCH_KEYWORDS = {"user", "group", "extra_groups"}
SUBPROCESS_CALLS = {"Popen", "run", "call", "check_call", "check_output"}


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _is_switch_command(node: ast.expr) -> bool:
    """A string naming a user-switching tool as the command it runs."""
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return False
    words = node.value.split()
    return bool(words) and Path(words[0]).name in SWITCH_COMMANDS


def _switch(node: ast.expr) -> str | None:
    """How `node` switches to another user, if it does."""
    if isinstance(node, ast.Call):
        called = _name(node.func)
        if called in IDENTITY_CALLS:
            return f"calls {called}()"
        if called in SUBPROCESS_CALLS and any(
                keyword.arg in SWITCH_KEYWORDS for keyword in node.keywords):
            return f"starts a process as another user ({called}(user=...))"
    elif isinstance(node, ast.List | ast.Tuple) and node.elts and _is_switch_command(
            node.elts[0]):
        return f"runs {ast.literal_eval(node.elts[0]).split()[0]}"
    elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and len(node.value.split()) > 1 and _is_switch_command(node)):
        return f"runs a shell command line starting with {node.value.split()[0]}"
    return None


def privilege_drops(source: str, filename: str) -> list[str]:
    """Where `source` switches to another user: `file:line what`."""
    return [f"{filename}:{node.lineno} {what}" for node in ast.walk(ast.parse(source, filename))
            if isinstance(node, ast.expr) and (what := _switch(node)) is not None]


@pytest.mark.parametrize(("source", "drops"), [
    # The ways a test has switched user, or could.
    ("os.setuid(65534)", True),
    ("from os import setgroups\nsetgroups([])", True),
    ("subprocess.run(['setpriv', '--reuid=65534', python])", True),
    ("cmd = ('/usr/sbin/runuser', '-u', 'nobody', '--', 'true')", True),
    ("subprocess.Popen(argv, user=65534)", True),
    ("subprocess.run('sudo -u nobody id', shell=True)", True),
    # Look-alikes that switch nobody.
    ("shutil.which('setpriv')", False),
    ("notice(user='alice')", False),
    ("pwd.getpwnam('nobody')", False),
    ("message = 'su'", False),
])
def test_the_detector_knows_a_privilege_drop(source: str, drops: bool) -> None:
    assert bool(privilege_drops(source, "example.py")) == drops


def test_the_helper_is_where_privileges_are_dropped() -> None:
    # If the helper stopped dropping privileges, the test below would prove nothing.
    assert privilege_drops(HELPER.read_text(), HELPER.name)


def test_no_test_drops_privileges_outside_the_helper() -> None:
    offenders = [drop for path in sorted(TESTS.rglob("*.py")) if path != HELPER
                 for drop in privilege_drops(path.read_text(), str(path.relative_to(TESTS)))]
    assert not offenders, (
        "these tests switch user on their own; use the `unprivileged` fixture of "
        "tests/unprivileged.py, which stages code the other user can read:\n"
        + "\n".join(offenders))
