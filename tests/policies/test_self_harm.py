"""A blocking rule that would end a process the machine needs is refused at validation.

Every entry of the critical-process table is tried by name, by exe glob and by
command line; each must be refused with the rule's line and the process named.
"""

from __future__ import annotations

import datetime as dt

import pytest

from policies.catalog_model import AppDefinition
from policies.critical import CRITICAL_PROCESSES, CriticalProcess, critical_hits
from policies.errors import PolicyError
from policies.loader import load_catalog, parse_policy

TODAY = dt.date(2026, 11, 28)

POLICY = """\
name: t
mode: enforce
apps:
  - id: x
    name: X
    signatures:
      process:
        {field}: ['{value}']
rules:
  - app: x
    verdict: deny
    action: {action}
"""


def refusal(field: str, value: str, action: str = "terminate") -> str:
    """The refusal of a blocking rule whose app has `field: [value]`, every issue joined."""
    text = POLICY.format(field=field, value=value.replace("'", "''"), action=action)
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "p.yaml", load_catalog(), TODAY)
    for issue in caught.value.issues:
        assert (issue.file, issue.line, issue.field) == ("p.yaml", 12, "rules[0].action")
        assert issue.message.startswith("rule for 'x' would terminate ")
        assert "use action `notify`" in issue.hint
    return "\n".join(issue.message for issue in caught.value.issues)


def hit_by(field: str, value: str) -> set[CriticalProcess]:
    app = AppDefinition.model_validate(
        {"id": "x", "name": "X", "signatures": {"process": {field: [value]}}})
    return {hit.process for hit in critical_hits(app, ("linux", "macos", "windows"))}


def basename(process: CriticalProcess) -> str:
    name = process.exe.replace("\\", "/").rsplit("/", 1)[-1]
    # The agent lower-cases Windows paths; a glob without a Windows marker is exact.
    return name.lower() if process.os == "windows" else name


def ids(process: CriticalProcess) -> str:
    return f"{process.os}:{process.exe}"


@pytest.mark.parametrize("process", CRITICAL_PROCESSES, ids=ids)
def test_naming_a_critical_process_is_refused(process: CriticalProcess) -> None:
    assert process in hit_by("names", process.name)
    message = refusal("names", process.name)
    assert f"{process.name} (" in message or f"{process.name} on {process.os}" in message


@pytest.mark.parametrize("process", CRITICAL_PROCESSES, ids=ids)
def test_a_glob_of_a_critical_exe_is_refused(process: CriticalProcess) -> None:
    assert process in hit_by("exe_globs", f"**/{basename(process)}")
    assert "matched by process.exe_globs" in refusal("exe_globs", f"**/{basename(process)}")


@pytest.mark.parametrize("process", CRITICAL_PROCESSES, ids=ids)
def test_a_command_line_of_a_critical_process_is_refused(process: CriticalProcess) -> None:
    pattern = f"(?i){basename(process)}\\b"
    assert process in hit_by("cmdline", pattern)
    assert "matched by process.cmdline" in refusal("cmdline", pattern)


@pytest.mark.parametrize(("field", "value", "words"), [
    # (signature, an over-broad value, what the refusal says)
    ("exe_globs", "/**", "'/**' names nothing but wildcards"),
    ("exe_globs", "*", "'*' names nothing but wildcards"),
    ("exe_globs", "C:\\**", "names nothing but wildcards"),
    ("exe_globs", "?:/**", "names nothing but wildcards"),
    ("names", "*", "'*' names nothing but wildcards"),
    ("exe_globs", "/usr/**", "sshd on linux"),
    ("exe_globs", "%ProgramFiles%/**", "the Warden agent's Python on windows"),
    ("exe_globs", "C:/Windows/**", "smss.exe"),
    ("exe_globs", "/System/**", "WindowServer"),
    ("exe_globs", "**/python3*", "the Warden agent's Python on linux"),
    ("cmdline", ".*", "init on linux"),
    ("cmdline", "", "lsass.exe on windows"),
])
def test_over_broad_signatures_are_refused(field: str, value: str, words: str) -> None:
    assert words in refusal(field, value)


def test_the_same_signatures_may_report_and_notify() -> None:
    for action in ("report", "notify"):
        parse_policy(POLICY.format(field="names", value="sshd", action=action), "p.yaml",
                     load_catalog(), TODAY)


def test_the_stock_catalog_apps_may_be_terminated() -> None:
    catalog = load_catalog()
    rules = "".join(f"  - app: {app}\n    verdict: deny\n    action: terminate\n"
                    for app in sorted(catalog))
    policy = parse_policy(f"name: all\nmode: enforce\nrules:\n{rules}", "p.yaml", catalog, TODAY)
    assert {rule.action for rule in policy.rules} == {"terminate"}


def test_a_policy_scoped_to_one_os_is_checked_against_that_os_only() -> None:
    text = POLICY.format(field="names", value="explorer.exe", action="terminate")
    scoped = text.replace("mode: enforce\n", "mode: enforce\nscope:\n  os: [linux]\n")
    assert parse_policy(scoped, "p.yaml", load_catalog(), TODAY).scope.os == ["linux"]
    with pytest.raises(PolicyError, match=r"explorer\.exe"):
        parse_policy(scoped.replace("[linux]", "[linux, windows]"), "p.yaml", load_catalog(),
                     TODAY)
