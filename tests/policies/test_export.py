"""`warden policy export`: each native blocker's format, checked against its published form."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

WARDEN = str(Path(sys.executable).with_name("warden"))
DIGEST = "ab" * 32
POLICY = f"""
name: export-test
mode: enforce
apps:
  - id: corpchat
    name: CorpChat
    signatures:
      process:
        names: [corpchat, CorpChat.exe]
        exe_globs: ['/opt/corpchat/bin/corpchat', '/opt/corpchat/**',
                    '%LOCALAPPDATA%/CorpChat/CorpChat.exe', '~/corp*/x']
        sha256: [{DIGEST}]
      installed:
        team_ids: [ABCDE12345]
rules:
  - app: telegram
    verdict: deny
    action: block
    alternative: signal
  - app: signal
    verdict: allow
  - app: corpchat
    verdict: deny
    action: notify
"""
# fapolicyd.rules(5): `decision perm subject : object`, one rule a line.
FAPOLICYD_RULE = re.compile(
    r"^(allow|deny|allow_audit|deny_audit|allow_syslog|deny_syslog|allow_log|deny_log)"
    r" perm=(open|execute|any) all : (path=/\S.*|dir=/\S*/|sha256hash=[0-9a-f]{64})$")
SANTA_TYPES = {"BINARY", "CERTIFICATE", "TEAMID", "SIGNINGID", "CDHASH"}


def _export(tmp_path: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return subprocess.run([WARDEN, "policy", "export", str(policy), "--format", fmt],
                          capture_output=True, text=True, timeout=60)


def test_fapolicyd_rules_follow_the_rule_grammar(tmp_path: Path) -> None:
    done = _export(tmp_path, "fapolicyd")
    assert done.returncode == 0, done.stderr
    rules = [line for line in done.stdout.splitlines() if line and not line.startswith("#")]
    assert all(FAPOLICYD_RULE.match(rule) for rule in rules), rules
    assert "deny_audit perm=execute all : path=/opt/corpchat/bin/corpchat" in rules
    assert "deny_audit perm=execute all : dir=/opt/corpchat/" in rules
    assert f"deny_audit perm=execute all : sha256hash={DIGEST}" in rules
    assert "deny_audit perm=execute all : path=/usr/bin/telegram-desktop" in rules
    assert not any("signal" in rule.lower() for rule in rules)  # allowed apps never appear
    assert "process names" in done.stderr  # what fapolicyd cannot express is said


def test_santa_rules_are_what_santactl_imports(tmp_path: Path) -> None:
    done = _export(tmp_path, "santa")
    assert done.returncode == 0, done.stderr
    rules = json.loads(done.stdout)["rules"]
    for rule in rules:
        assert set(rule) <= {"identifier", "policy", "rule_type", "custom_msg", "custom_url"}
        assert rule["policy"] == "BLOCKLIST" and rule["rule_type"] in SANTA_TYPES
        if rule["rule_type"] == "TEAMID":
            assert re.fullmatch(r"[A-Z0-9]{10}", rule["identifier"])
        if rule["rule_type"] == "BINARY":
            assert re.fullmatch(r"[0-9a-f]{64}", rule["identifier"])
    pairs = {(rule["rule_type"], rule["identifier"]) for rule in rules}
    assert {("TEAMID", "ABCDE12345"), ("BINARY", DIGEST), ("TEAMID", "6N38VWS5BX")} <= pairs


def test_applocker_xml_denies_the_windows_paths_and_allows_the_rest(tmp_path: Path) -> None:
    done = _export(tmp_path, "applocker")
    assert done.returncode == 0, done.stderr
    root = ElementTree.fromstring(done.stdout)
    assert root.tag == "AppLockerPolicy" and root.get("Version") == "1"
    (collection,) = root.findall("RuleCollection")
    assert collection.get("Type") == "Exe" and collection.get("EnforcementMode") == "Enabled"
    rules = collection.findall("FilePathRule")
    for rule in rules:
        assert re.fullmatch(r"[0-9a-f-]{36}", rule.get("Id", ""))
        assert rule.get("UserOrGroupSid") == "S-1-1-0" and rule.get("Action") in {"Allow",
                                                                                    "Deny"}
        assert rule.find("Conditions/FilePathCondition") is not None
    paths = {(rule.get("Action"), rule.find("Conditions/FilePathCondition").get("Path"))
             for rule in rules}  # type: ignore[union-attr]
    assert ("Allow", "*") in paths
    assert ("Deny", "%OSDRIVE%\\Users\\*\\AppData\\Local\\CorpChat\\CorpChat.exe") in paths
    assert ("Deny", "*\\CorpChat.exe") in paths
    assert ("Deny", "%OSDRIVE%\\Users\\*\\AppData\\Roaming\\Telegram Desktop\\Telegram.exe") \
        in paths
    assert not any("/" in path for _, path in paths)  # Linux and macOS paths stay out


@pytest.mark.parametrize("fmt", ["word", ""])
def test_an_unknown_format_is_refused(tmp_path: Path, fmt: str) -> None:
    done = _export(tmp_path, fmt)
    assert done.returncode == 2 and "--format" in done.stderr
