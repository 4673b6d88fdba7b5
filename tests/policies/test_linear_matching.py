"""Every policy pattern matches in time linear in its input, on the agent and the server.

Python's `re` took over 40 s on the stock `flatpak.* run .*...` signature and a 7 KB
command line; these inputs are far longer, so with a backtracking engine the tests
would not finish within pytest's timeout. No test times anything: the answers are
checked, and the run's deadline is the proof.
"""

from __future__ import annotations

import datetime as dt

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.errors import PolicyError
from policies.loader import load_catalog, parse_policy
from policies.matching import (
    MAX_ARG_CHARS,
    MAX_CMDLINE_CHARS,
    command_line_window,
    compile_regex,
)
from policies.observations import InstalledObservation, ProcessObservation
from policies.patterns import compile_glob

TODAY = dt.date(2026, 11, 28)
HOSTILE = "flatpak run " * 100_000  # 1.2 MB: every start is a candidate for the signature


def engine(policy: str | None = None, os_name: str = "linux") -> Engine:
    catalog = load_catalog()
    text = policy or ("name: t\nrules:\n  - app: telegram\n    verdict: deny\n"
                      "  - app: signal\n    verdict: allow\n")
    bundle = compile_bundle(parse_policy(text, "test", catalog, TODAY), catalog)
    return Engine(bundle, HostContext(os=os_name))  # type: ignore[arg-type]


def proc(exe: str | None, *cmdline: str, name: str = "flatpak") -> ProcessObservation:
    return ProcessObservation(pid=7, name=name, create_time=1.0, exe=exe, cmdline=cmdline)


def test_a_megabyte_command_line_is_matched_and_refused_on_its_merits() -> None:
    stock = engine()
    assert stock.evaluate(proc("/usr/bin/flatpak", "flatpak", HOSTILE)) == []
    [finding] = stock.evaluate(proc("/usr/bin/flatpak", "flatpak", "run",
                                    "org.telegram.desktop", HOSTILE))
    assert finding.matched == r"process.cmdline: flatpak.* run .*\borg\.telegram\.desktop\b"


def test_an_app_id_after_a_huge_argument_is_still_seen() -> None:
    # A long argument is cut, so it cannot push the app id out of the window.
    padded = proc("/usr/bin/flatpak", "flatpak", "run", "--env=X=" + "a" * 500_000,
                  "org.telegram.desktop")
    [finding] = engine().evaluate(padded)
    assert finding.app == "telegram"
    evidence_cmdline = finding.evidence["cmdline"]
    assert evidence_cmdline[-1] == "org.telegram.desktop"
    assert len(evidence_cmdline[2]) == MAX_ARG_CHARS


def test_the_command_line_window_and_the_evidence_are_bounded() -> None:
    window = command_line_window(["x" * 5000] * 1000)
    assert len(" ".join(window)) <= MAX_CMDLINE_CHARS
    assert all(len(arg) <= MAX_ARG_CHARS for arg in window)
    [finding] = engine().evaluate(proc("/usr/bin/flatpak", "flatpak", "run",
                                       "org.telegram.desktop", *["y" * 100_000] * 10))
    assert len(" ".join(finding.evidence["cmdline"])) <= MAX_CMDLINE_CHARS
    assert command_line_window(["flatpak", "run", "x"]) == ["flatpak", "run", "x"]


OWN_APP = """\
name: t
apps:
  - id: x
    name: X
    signatures:
      process:
        exe_globs: ['{glob}']
rules:
  - app: x
    verdict: deny
"""


@pytest.mark.parametrize(("glob", "path", "matches"), [
    # (a glob that backtracks in a regex translation, a hostile path as long as a path
    # can be, matched?)
    ("/opt/*a*a*a*a*b", "/opt/" + "a" * 30_000, False),
    ("/opt/*a*a*a*a*b", "/opt/" + "a" * 30_000 + "b", True),
    ("**/a**a**a**a**b", "/" + "a/" * 15_000, False),
    ("**/a**a**a**a**b", "/" + "a/" * 15_000 + "b", True),
    ("~/**/Telegram/Telegram", "/home/" + "x/" * 15_000 + "Telegram/Telegram", True),
    ("~/**/Telegram/Telegram", "/home/" + "Telegram/" * 3_000 + "Telegram", True),
])
def test_hostile_paths_against_backtracking_globs(glob: str, path: str, matches: bool) -> None:
    found = engine(OWN_APP.format(glob=glob)).evaluate(proc(path, path, name="x-app"))
    assert bool(found) is matches


def test_a_path_longer_than_any_os_allows_matches_no_glob() -> None:
    path = "/opt/" + "a" * 40_000 + "b"
    assert engine(OWN_APP.format(glob="/opt/*b")).evaluate(proc(path, name="x-app")) == []


def test_undecodable_bytes_in_a_path_neither_crash_nor_hide_the_app() -> None:
    # A folder name that is not UTF-8 reaches Python as a lone surrogate.
    exe = "/home/al\udcffce/Telegram/Telegram"
    [finding] = engine().evaluate(proc(exe, exe, name="x-app"))
    assert finding.matched == "process.exe_globs: **/Telegram/Telegram"
    cmdline = ("flatpak", "run", "\udce9", "org.telegram.desktop")
    assert engine().evaluate(proc("/usr/bin/flatpak", *cmdline))


def test_caseless_globs_fold_like_windows_and_see_through_the_literal_prefilter() -> None:
    windows = engine(os_name="windows")
    # RE2 folds the long s (U+017F) onto "s", as the literal prefilter must too.
    exe = "C:\\Users\\Bob\\AppData\\Roaming\\Telegram De\u017fktop\\Telegram.exe"
    assert windows.evaluate(proc(exe, name="x.exe"))
    display = compile_glob("Telegram Desktop*", caseless=True)
    assert display.fullmatch("TELEGRAM DESKTOP 5.1") and not display.fullmatch("Telegram")
    installed = InstalledObservation(source="windows_uninstall", id="k",
                                     display_name="telegram desktop 4.0")
    assert windows.evaluate(installed)


REGEX_APP = """\
name: t
apps:
  - id: x
    name: X
    signatures:
      process:
        {field}: ['{value}']
rules:
  - app: x
    verdict: deny
"""


@pytest.mark.parametrize(("field", "value", "words"), [
    # (signature field, a pattern RE2 cannot bound or compile, words of the error)
    ("cmdline", r"(a+)\1", "invalid escape sequence: \\1"),
    ("cmdline", "foo(?=bar)", "invalid perl operator: (?="),
    ("cmdline", "(?<!x)y", "invalid perl operator: (?<"),
    ("cmdline", r"telegram\Z", "invalid escape sequence: \\Z"),
    ("cmdline", "a{1001}", "invalid repetition size"),
    ("cmdline", "x" * 600, "more than 512"),
    ("exe_globs", "/opt/" + "y" * 600, "more than 512"),
])
def test_validation_refuses_what_the_engine_cannot_bound(field: str, value: str,
                                                         words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(REGEX_APP.format(field=field, value=value), "p.yaml", load_catalog(), TODAY)
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.field) == (
        "p.yaml", 7, f"apps[0].signatures.process.{field}")
    assert words in issue.message
    assert issue.hint


@pytest.mark.parametrize(("app", "command_line"), [
    ("telegram", "/usr/bin/flatpak run --branch=stable org.telegram.desktop -- %u"),
    ("telegram", "flatpak run io.github.tdesktop_x64.TDesktop"),
    ("signal", "/usr/bin/flatpak run --command=signal-desktop org.signal.Signal"),
])
def test_the_catalog_command_line_signatures_still_match_their_apps(app: str,
                                                                     command_line: str) -> None:
    patterns = load_catalog()[app].signatures.process.cmdline
    assert any(compile_regex(pattern).search(command_line) for pattern in patterns)
    assert not any(compile_regex(pattern).search(command_line.replace("run", "info"))
                   for pattern in patterns)
