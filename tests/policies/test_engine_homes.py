"""`~` in catalog globs also covers homes outside /home, /Users and C:/Users.

The agent passes the machine's homes (from /etc/passwd) in HostContext.homes;
the engine maps a path under such a home onto the standard place before
matching, and reports the path as it was seen.
"""

from __future__ import annotations

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.observations import InstalledObservation, ProcessObservation
from policies.patterns import home_aliases

FLATPAK_EXE = "/.local/share/flatpak/app/org.telegram.desktop/current/active/files/bin/telegram"
DATA_DIR = "/.local/share/TelegramDesktop"
HOMES = ("/srv/people/alice", "/home/bob", "/root", "/data/users/alice/nested")


@pytest.fixture(scope="module")
def bundle() -> dict:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


def _apps(engine: Engine, observation: ProcessObservation | InstalledObservation) -> list[str]:
    return [finding.app for finding in engine.evaluate(observation)]


@pytest.mark.parametrize(
    ("exe", "homes", "expected"),
    [
        # A standard home: `~` matched it before and still does.
        ("/home/bob" + FLATPAK_EXE, (), ["telegram"]),
        # A home from /etc/passwd outside /home: only matched once the engine knows it.
        ("/srv/people/alice" + FLATPAK_EXE, (), []),
        ("/srv/people/alice" + FLATPAK_EXE, HOMES, ["telegram"]),
        # The home is a whole path segment: alicex is somebody else's folder.
        ("/srv/people/alicex" + FLATPAK_EXE, HOMES, []),
        # Not under any home at all.
        ("/opt/shared" + FLATPAK_EXE, HOMES, []),
        # A home inside a home: the longest applies.
        ("/data/users/alice/nested" + FLATPAK_EXE, HOMES, ["telegram"]),
        # A glob naming the real place still matches when a home is there too
        # (a service account whose home is /var/lib).
        ("/var/lib/flatpak/app/org.telegram.desktop/x/telegram", ("/var/lib",), ["telegram"]),
    ],
)
def test_process_exe_under_a_home_anywhere(
    bundle: dict, exe: str, homes: tuple[str, ...], expected: list[str]
) -> None:
    engine = Engine(bundle, HostContext(os="linux", homes=homes))
    observation = ProcessObservation(pid=10, name="telegram", exe=exe)
    assert _apps(engine, observation) == expected


def test_evidence_keeps_the_path_as_seen(bundle: dict) -> None:
    engine = Engine(bundle, HostContext(os="linux", homes=HOMES))
    exe = "/srv/people/alice" + FLATPAK_EXE
    [finding] = engine.evaluate(ProcessObservation(pid=10, name="telegram", exe=exe))
    assert finding.evidence["exe"] == exe
    assert finding.confidence == "high"


def test_a_data_folder_in_an_unusual_home_is_an_installed_finding(bundle: dict) -> None:
    folder = InstalledObservation(source="folder", id="/srv/people/alice" + DATA_DIR,
                                  path="/srv/people/alice" + DATA_DIR)
    assert _apps(Engine(bundle, HostContext(os="linux")), folder) == []
    assert _apps(Engine(bundle, HostContext(os="linux", homes=HOMES)), folder) == ["telegram"]


def test_windows_profiles_elsewhere_match_appdata_placeholders(bundle: dict) -> None:
    engine = Engine(bundle, HostContext(os="windows", homes=("D:\\Profiles\\Bob",)))
    exe = "D:\\Profiles\\Bob\\AppData\\Roaming\\Telegram Desktop\\Telegram.exe"
    assert _apps(engine, ProcessObservation(pid=4, name="Telegram.exe", exe=exe)) == [
        "telegram"]


def test_only_homes_that_tilde_misses_get_an_alias() -> None:
    assert home_aliases(("/home/bob", "/root", "/Users/carol", "C:/Users/dan",
                         "/srv/people/alice/", "D:\\Profiles\\Bob", "/")) == [
        ("/srv/people/alice", "/home/alice"), ("d:/profiles/bob", "c:/users/bob")]
