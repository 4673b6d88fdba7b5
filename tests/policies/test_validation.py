"""One broken policy per kind of error: each message names the file, the line and the field."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from policies.errors import PolicyError
from policies.loader import load_catalog, load_policy

TODAY = dt.date(2026, 11, 28)
VALID_HEAD = "name: test\nrules:\n"

# (what is broken, policy text, expected line, expected field, words the message must contain)
BROKEN = [
    ("yaml syntax", "name: test\nrules:\n  - app: [telegram\n    verdict: deny\n", 4, "",
     "YAML syntax"),
    ("unknown top-level key", "name: test\nmodee: enforce\nrules:\n  - app: telegram\n"
     "    verdict: deny\n", 2, "modee", "unknown key 'modee'"),
    ("unknown rule key", VALID_HEAD + "  - app: telegram\n    verdict: deny\n    colour: red\n", 5,
     "rules[0].colour", "unknown key 'colour'"),
    ("bad verdict", VALID_HEAD + "  - app: telegram\n    verdict: block\n", 4,
     "rules[0].verdict", "'deny', 'allow' or 'alert'"),
    ("bad mode", "name: t\nmode: strict\nrules:\n  - app: telegram\n    verdict: deny\n", 2,
     "mode", "'audit' or 'enforce'"),
    ("missing verdict", VALID_HEAD + "  - app: telegram\n", 3, "rules[0].verdict", "required"),
    ("unknown app id", VALID_HEAD + "  - app: telegramm\n    verdict: deny\n", 3,
     "rules[0].app", "unknown app id 'telegramm'"),
    ("alternative not allowed", VALID_HEAD + "  - app: telegram\n    verdict: deny\n"
     "    alternative: signal\n", 5, "rules[0].alternative", "not allowed by this policy"),
    ("alternative unknown", VALID_HEAD + "  - app: telegram\n    verdict: deny\n"
     "    alternative: pigeon\n", 5, "rules[0].alternative", "unknown app id 'pigeon'"),
    ("conflicting rules", VALID_HEAD + "  - app: telegram\n    verdict: deny\n"
     "  - app: telegram\n    verdict: allow\n", 5, "rules[1].app",
     "conflicts with the rule on line 3"),
    ("bad date", VALID_HEAD + "  - app: telegram\n    verdict: deny\n    exceptions:\n"
     "      - hosts: [pc-1]\n        expires: next week\n", 7,
     "rules[0].exceptions[0].expires", "YYYY-MM-DD"),
    ("bad glob", "name: t\napps:\n  - id: x\n    name: X\n    signatures:\n      process:\n"
     "        exe_globs: ['%WINDIR%/x.exe']\nrules:\n  - app: x\n    verdict: deny\n", 7,
     "apps[0].signatures.process.exe_globs", "unknown placeholder %WINDIR%"),
    ("bad cidr", "name: t\napps:\n  - id: x\n    name: X\n    signatures:\n      network:\n"
     "        cidrs: [10.0.0.1/8]\nrules:\n  - app: x\n    verdict: deny\n", 7,
     "apps[0].signatures.network.cidrs", "not a CIDR network"),
    ("bad port", "name: t\napps:\n  - id: x\n    name: X\n    signatures:\n      network:\n"
     "        cidrs: [10.0.0.0/8]\n        ports: [443, 70000]\nrules:\n  - app: x\n"
     "    verdict: deny\n", 8, "apps[0].signatures.network.ports", "port 70000 is out of range"),
    ("bad regex", "name: t\napps:\n  - id: x\n    name: X\n    signatures:\n      process:\n"
     "        cmdline: ['(unclosed']\nrules:\n  - app: x\n    verdict: deny\n", 7,
     "apps[0].signatures.process.cmdline", "bad regular expression"),
    ("own app shadows catalog", "name: t\napps:\n  - id: telegram\n    name: T\nrules:\n"
     "  - app: telegram\n    verdict: deny\n", 3, "apps[0].id", "already in the catalog"),
    ("terminate an allowed app", VALID_HEAD + "  - app: signal\n    verdict: allow\n"
     "    action: terminate\n", 5, "rules[0].action", "cannot be terminated"),
    ("block an alerted app", VALID_HEAD + "  - app: signal\n    verdict: alert\n"
     "    action: block\n", 5, "rules[0].action", "action `block` needs verdict `deny`"),
    ("block an allowed app", VALID_HEAD + "  - app: signal\n    verdict: allow\n"
     "    action: block\n", 5, "rules[0].action", "needs verdict `deny`, not 'allow'"),
    ("no rules", "name: t\nrules: []\n", 2, "rules", "at least 1"),
    ("not a mapping", "- just\n- a list\n", 1, "", "expected a mapping"),
]


@pytest.fixture(scope="module")
def catalog() -> dict:
    return load_catalog()


@pytest.mark.parametrize(("kind", "text", "line", "field", "words"), BROKEN,
                         ids=[case[0] for case in BROKEN])
def test_each_error_names_file_line_and_field(
    tmp_path: Path, catalog: dict, kind: str, text: str, line: int, field: str, words: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as raised:
        load_policy(path, catalog, today=TODAY)
    issues = raised.value.issues
    assert any(
        issue.file == str(path) and issue.line == line and issue.field == field
        and words in str(issue)
        for issue in issues
    ), [str(issue) for issue in issues]
    # Every issue explains how to fix it.
    assert all(issue.hint for issue in issues), [str(issue) for issue in issues]


def test_default_policy_is_valid(catalog: dict) -> None:
    from policies.loader import default_policy_path

    policy = load_policy(default_policy_path(), catalog, today=TODAY)
    assert policy.mode == "audit"
    assert {rule.app: rule.verdict for rule in policy.rules} == {"telegram": "deny",
                                                                 "signal": "allow"}


def test_oversized_policy_is_refused(tmp_path: Path, catalog: dict) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text("name: t\n# " + "x" * (1024 * 1024) + "\nrules: []\n")
    with pytest.raises(PolicyError, match="larger than 1 MiB"):
        load_policy(path, catalog)


def _warden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], capture_output=True,
                          text=True, timeout=60, check=False)


def test_cli_validate_reports_every_file_and_never_a_traceback(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(VALID_HEAD + "  - app: telegram\n    verdict: deny\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID_HEAD + "  - app: telegram\n    verdict: nope\n")
    result = _warden("policy", "validate", str(good), str(bad))
    assert result.returncode == 1
    assert f"ok: {good}" in result.stdout
    assert f"{bad}:4: rules[0].verdict:" in result.stderr
    assert "Traceback" not in result.stderr
    assert _warden("policy", "validate", str(good)).returncode == 0


def test_cli_policy_test_explains_a_deny(tmp_path: Path) -> None:
    from policies.loader import default_policy_path

    result = _warden("policy", "test", str(default_policy_path()), "--process", "telegram-desktop")
    assert result.returncode == 0, result.stderr
    assert "deny" in result.stdout
    assert "process.names: telegram-desktop" in result.stdout
    assert "https://signal.org/download/" in result.stdout
    allowed = _warden("policy", "test", str(default_policy_path()), "--connect", "8.8.8.8:443")
    assert "deny" not in allowed.stdout
    bad = _warden("policy", "test", str(default_policy_path()), "--connect", "8.8.8.8")
    assert bad.returncode != 0 and "IP:PORT" in bad.stderr


CMDLINE_BLOCK = """
name: t
apps:
  - id: webchat
    name: WebChat
    signatures:
      process:
        names: [webchat]
        cmdline: ['--app=https://web\\.chat\\.example']
rules:
  - app: webchat
    verdict: deny
    action: block
"""


def test_cli_validate_says_command_line_rules_cannot_block_at_exec(tmp_path: Path) -> None:
    policy = tmp_path / "cmdline.yaml"
    policy.write_text(CMDLINE_BLOCK)
    result = _warden("policy", "validate", str(policy))
    assert result.returncode == 0, result.stderr
    assert "note:" in result.stdout and "1 process.cmdline signature(s) cannot apply at exec" \
        in result.stdout and "process sensor" in result.stdout
    # The same app with action notify: nothing to say.
    policy.write_text(CMDLINE_BLOCK.replace("action: block", "action: notify"))
    assert "note:" not in _warden("policy", "validate", str(policy)).stdout
def test_cli_policy_test_identifies_an_organisations_build_by_its_content(
        tmp_path: Path) -> None:
    policy = tmp_path / "org.yaml"
    policy.write_text(
        "name: org\nrules:\n  - app: inhouse-chat\n    verdict: deny\napps:\n"
        "  - id: inhouse-chat\n    name: In-house chat\n    signatures:\n      content:\n"
        "        - id: build-marker\n          strings: [ExampleCorpChatClient-v2]\n"
        "          source: our build 2.3.1, strings -n 8\n")
    build = tmp_path / "renamed-tool"
    build.write_bytes(b"\x7fELF" + b"\0" * 5000 + "ExampleCorpChatClient-v2".encode("utf-16-le"))
    result = _warden("policy", "test", str(policy), "--content", str(build))
    assert result.returncode == 0, result.stderr
    assert "deny: In-house chat" in result.stdout
    assert "content: inhouse-chat/build-marker (confidence high)" in result.stdout
    missing = _warden("policy", "test", str(policy), "--content", str(tmp_path / "absent"))
    assert missing.returncode != 0 and "cannot read it" in missing.stderr
    # A short string is refused with the file, the line and the field.
    policy.write_text(policy.read_text().replace("ExampleCorpChatClient-v2", "chat"))
    invalid = _warden("policy", "validate", str(policy))
    assert invalid.returncode == 1
    assert f"{policy}:11: apps[0].signatures.content[0].strings:" in invalid.stderr
