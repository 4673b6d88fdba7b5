"""The installed-apps sensor on real macOS layouts (.app bundles with real Info.plist files).

This Linux machine has no `codesign`; its output for the bundles is recorded
in tests/agent/data/ and handed to the sensor through the `codesign` reader,
the one thin seam for what cannot run here.
"""

from __future__ import annotations

import plistlib
import shutil
from pathlib import Path

import pytest

from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.installed_macos import parse_team_id, run_codesign
from policies.compiler import compile_bundle
from policies.engine import Engine, Finding, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def mac_engine() -> Engine:
    catalog = load_catalog()
    return Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                  HostContext(os="macos"))


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    root = tmp_path / "mac"
    for folder in ("Applications", "Users/alice", "Users/Shared", "Users/bob/Applications"):
        (root / folder).mkdir(parents=True)
    return root


class RecordedCodesign:
    """`codesign -dv` output recorded on a Mac, per bundle; counts the calls."""

    def __init__(self, recordings: dict[Path, str]) -> None:
        self.recordings = recordings
        self.calls: list[Path] = []

    def __call__(self, app: Path) -> str | None:
        self.calls.append(app)
        name = self.recordings.get(app)
        return (DATA / name).read_text() if name else None


def bundle(app: Path, bundle_id: str, version: str, name: str | None = None,
           binary: bool = False) -> Path:
    """A bundle as the installer leaves it: Info.plist and the executable."""
    info = {"CFBundleIdentifier": bundle_id, "CFBundleShortVersionString": version,
            "CFBundleVersion": "1", "CFBundleExecutable": app.stem,
            "CFBundlePackageType": "APPL"}
    if name:
        info["CFBundleName"] = name
    (app / "Contents/MacOS").mkdir(parents=True)
    (app / "Contents/MacOS" / app.stem).write_bytes(b"\xcf\xfa\xed\xfe")
    with (app / "Contents/Info.plist").open("wb") as handle:
        plistlib.dump(info, handle, fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML)
    return app


def sensor_for(root: Path, engine: Engine, codesign: RecordedCodesign) -> InstalledAppsSensor:
    return InstalledAppsSensor(root, "macos", engine.folder_marker_files,
                               engine.folder_marker_globs, codesign=codesign)


def denied(sensor: InstalledAppsSensor, engine: Engine) -> list[Finding]:
    return [f for f in engine.evaluate_all(sensor.scan()) if f.verdict == "deny"]


def one(findings: list[Finding], **evidence: object) -> Finding:
    hits = [f for f in findings if all(f.evidence.get(k) == v for k, v in evidence.items())]
    assert len(hits) == 1, f"expected one finding with {evidence}, got {findings}"
    assert (hits[0].app, hits[0].verdict, hits[0].alternative) == ("telegram", "deny", "signal")
    return hits[0]


def test_bundles_in_applications_and_each_users_applications(
        machine: Path, mac_engine: Engine) -> None:
    tdesktop = bundle(machine / "Applications/Telegram.app", "com.tdesktop.Telegram", "5.12.3",
                      "Telegram", binary=True)
    lite = bundle(machine / "Applications/Messaging/Telegram Lite.app", "org.telegram.desktop",
                  "5.11.1")
    swift = bundle(machine / "Users/bob/Applications/Telegram.app", "ru.keepcoder.Telegram",
                   "11.2", "Telegram")
    codesign = RecordedCodesign({swift: "codesign_telegram_swift.txt"})
    sensor = sensor_for(machine, mac_engine, codesign)

    findings = denied(sensor, mac_engine)
    assert len(findings) == 3
    finding = one(findings, bundle_id="com.tdesktop.Telegram")
    assert finding.evidence == {
        "source": "app_bundle", "id": "com.tdesktop.Telegram", "bundle_id": "com.tdesktop.Telegram",
        "path": "/Applications/Telegram.app", "version": "5.12.3", "user": None,
        "display_name": "Telegram"}
    assert finding.matched == "installed.bundle_ids: com.tdesktop.Telegram"
    finding = one(findings, bundle_id="org.telegram.desktop")
    assert finding.evidence["path"] == "/Applications/Messaging/Telegram Lite.app"
    assert finding.evidence["display_name"] == "Telegram Lite"  # no CFBundleName: the folder
    finding = one(findings, bundle_id="ru.keepcoder.Telegram")
    assert finding.evidence["user"] == "bob"
    assert finding.evidence["path"] == "/Users/bob/Applications/Telegram.app"
    assert finding.evidence["team_id"] == "6N38VWS5BX"

    for app in (tdesktop, lite, swift):
        shutil.rmtree(app)
    assert denied(sensor, mac_engine) == []


def test_team_id_recognises_a_bundle_whatever_its_id(machine: Path, mac_engine: Engine) -> None:
    # A build with its own bundle id (a beta, a re-signed copy) still carries the team.
    app = bundle(machine / "Applications/Telegram Beta.app", "ru.keepcoder.TelegramBeta", "11.3")
    sensor = sensor_for(machine, mac_engine, RecordedCodesign({app: "codesign_telegram_swift.txt"}))

    finding = one(denied(sensor, mac_engine), bundle_id="ru.keepcoder.TelegramBeta")
    assert finding.matched == "installed.team_ids: 6N38VWS5BX"


def test_codesign_is_asked_again_only_when_the_bundle_changes(
        machine: Path, mac_engine: Engine) -> None:
    app = bundle(machine / "Applications/Telegram.app", "ru.keepcoder.Telegram", "11.2")
    codesign = RecordedCodesign({app: "codesign_telegram_swift.txt"})
    sensor = sensor_for(machine, mac_engine, codesign)

    sensor.scan()
    sensor.scan()
    assert codesign.calls == [app]
    shutil.rmtree(app)
    bundle(app, "ru.keepcoder.Telegram", "11.3")  # an update replaces the bundle
    assert [obs.version for obs in sensor.scan() if obs.source == "app_bundle"] == ["11.3"]
    assert codesign.calls == [app, app]


def test_homebrew_casks_and_data_folders(machine: Path, mac_engine: Engine) -> None:
    casks = [machine / "opt/homebrew/Caskroom/telegram-desktop/5.12.3",
             machine / "usr/local/Caskroom/telegram/11.2"]
    for cask in casks:
        cask.mkdir(parents=True)
    (machine / "opt/homebrew/Caskroom/telegram-desktop/.metadata").mkdir()
    data = machine / "Users/alice/Library/Application Support/Telegram Desktop"
    (data / "tdata").mkdir(parents=True)
    sensor = sensor_for(machine, mac_engine, RecordedCodesign({}))

    findings = denied(sensor, mac_engine)
    finding = one(findings, source="homebrew", id="telegram-desktop")
    assert (finding.evidence["version"], finding.evidence["path"]) == (
        "5.12.3", "/opt/homebrew/Caskroom/telegram-desktop")
    one(findings, source="homebrew", id="telegram", version="11.2")
    finding = one(findings, source="folder")
    assert finding.evidence["path"] == "/Users/alice/Library/Application Support/Telegram Desktop"
    assert finding.evidence["user"] == "alice"

    for cask in casks:
        shutil.rmtree(cask.parent)
    shutil.rmtree(data)
    assert denied(sensor, mac_engine) == []


def test_signal_is_seen_and_allowed_never_flagged(machine: Path, mac_engine: Engine) -> None:
    app = bundle(machine / "Applications/Signal.app", "org.whispersystems.signal-desktop",
                 "7.60.0", "Signal")
    (machine / "opt/homebrew/Caskroom/signal/7.60.0").mkdir(parents=True)
    (machine / "Users/alice/Library/Application Support/Signal").mkdir(parents=True)
    bundle(machine / "Applications/Safari.app", "com.apple.Safari", "18.1")
    sensor = sensor_for(machine, mac_engine, RecordedCodesign({app: "codesign_signal.txt"}))

    observations = sensor.scan()
    assert [f for f in mac_engine.evaluate_all(observations) if f.verdict == "deny"] == []
    allowed = mac_engine.evaluate_all(observations, include_allowed=True)
    assert {(f.app, f.verdict, f.evidence["source"]) for f in allowed} == {
        ("signal", "allow", "app_bundle"), ("signal", "allow", "homebrew"),
        ("signal", "allow", "folder")}
    assert {obs.team_id for obs in observations if obs.source == "app_bundle"} == {
        "U68MSDN6DR", None}


def test_a_broken_bundle_is_a_warning_and_the_rest_is_still_seen(
        machine: Path, mac_engine: Engine) -> None:
    broken = machine / "Applications/Broken.app/Contents"
    broken.mkdir(parents=True)
    (broken / "Info.plist").write_bytes(b"<?xml version='1.0'?><plist><dict><key>")
    nameless = bundle(machine / "Applications/Nameless.app", "x", "1")
    with (nameless / "Contents/Info.plist").open("wb") as handle:
        plistlib.dump({"CFBundleName": "Nameless"}, handle)
    # Being copied: no Info.plist yet. Not an error; the watcher calls again.
    (machine / "Applications/Copying.app/Contents/MacOS").mkdir(parents=True)
    bundle(machine / "Applications/Telegram.app", "com.tdesktop.Telegram", "5.12.3")
    sensor = sensor_for(machine, mac_engine, RecordedCodesign({}))

    one(denied(sensor, mac_engine), bundle_id="com.tdesktop.Telegram")
    assert len(sensor.warnings) == 2
    assert sensor.warnings[0].startswith(
        "could not parse /Applications/Broken.app/Contents/Info.plist: ")
    assert sensor.warnings[1] == "/Applications/Nameless.app has no CFBundleIdentifier in its " \
                                 "Info.plist"


@pytest.mark.parametrize(("recording", "team"), [
    ("codesign_telegram_swift.txt", "6N38VWS5BX"),
    ("codesign_signal.txt", "U68MSDN6DR"),
    ("codesign_adhoc.txt", None),  # "TeamIdentifier=not set"
])
def test_team_id_from_codesign_output(recording: str, team: str | None) -> None:
    assert parse_team_id((DATA / recording).read_text()) == team


@pytest.mark.skipif(shutil.which("codesign") is not None, reason="this machine has codesign")
def test_no_codesign_tool_means_no_team_id(tmp_path: Path) -> None:
    app = bundle(tmp_path / "Telegram.app", "com.tdesktop.Telegram", "5.12.3")
    assert run_codesign(app) is None


def test_watch_paths(machine: Path, mac_engine: Engine) -> None:
    (machine / "Applications/Utilities").mkdir()
    (machine / "opt/homebrew/Caskroom").mkdir(parents=True)
    (machine / "Users/alice/Library/Application Support").mkdir(parents=True)
    sensor = sensor_for(machine, mac_engine, RecordedCodesign({}))

    paths = sensor.watch_paths()
    for expected in ("Applications", "Applications/Utilities", "Users/bob/Applications",
                     "opt/homebrew/Caskroom", "Users/alice/Library/Application Support",
                     "Users"):
        assert machine / expected in paths
    assert machine / "Users/Shared" not in paths  # nobody's home
