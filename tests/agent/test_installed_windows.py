"""The installed-apps sensor on a Windows machine: recorded registry, real folders.

The registry cannot exist on this machine, so it is recorded in
tests/agent/data/windows_registry.json and read through RecordedRegistry; the
winreg reader behind the same interface is a dozen lines. The folders
(C:/Users/<user>/AppData/Roaming/Telegram Desktop, a portable copy) are real
files under a temporary root that stands for drive C:.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.installed_windows import package_family
from agent.sensors.registry import RecordedRegistry
from policies.compiler import compile_bundle
from policies.engine import Engine, Finding, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy

DATA = Path(__file__).parent / "data"
BOB_SID = "S-1-5-21-3623811015-3361044348-30300820-1001"
TELEGRAM_KEY = "{53F49750-6209-4FBF-9CA8-7A333C87D1ED}_is1"
AYUGRAM_KEY = "{53F49750-6209-4FBF-9CA8-7A333C87D666}_is1"
UNINSTALL = r"Software\Microsoft\Windows\CurrentVersion\Uninstall"
PACKAGES = (r"_Classes\Local Settings\Software\Microsoft\Windows\CurrentVersion\AppModel"
            r"\Repository\Packages")
TELEGRAM_MSIX = "TelegramMessengerLLP.TelegramDesktop_5.12.3.0_x64__t4vj0pshhgkwm"


@pytest.fixture(scope="module")
def win_engine() -> Engine:
    catalog = load_catalog()
    return Engine(compile_bundle(load_policy(default_policy_path(), catalog), catalog),
                  HostContext(os="windows"))


@pytest.fixture
def recorded() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DATA / "windows_registry.json").read_text())
    return data


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"MZ")


@pytest.fixture
def drive(tmp_path: Path) -> Path:
    """Drive C: of the recorded machine, with the folders its installs left."""
    root = tmp_path / "c"
    roaming = root / "Users/bob/AppData/Roaming"
    for name in ("Telegram.exe", "Updater.exe", "unins000.exe", "unins000.dat"):
        touch(roaming / "Telegram Desktop" / name)
    (roaming / "Telegram Desktop/tdata").mkdir()
    for name in ("AyuGram.exe", "Updater.exe"):
        touch(roaming / "AyuGram Desktop" / name)
    for name in ("Signal.exe", "Uninstall Signal.exe"):
        touch(root / "Users/bob/AppData/Local/Programs/signal-desktop" / name)
    (roaming / "Signal/IndexedDB").mkdir(parents=True)
    # carol is not logged on, so her registry is unknown; her portable copy is not.
    # Windows names are case-insensitive: "telegram.exe" is Telegram.exe.
    touch(root / "Users/carol/Downloads/Telegram/telegram.exe")
    touch(root / "Users/carol/Downloads/Telegram/Updater.exe")
    touch(root / "Tools/Telegram/Telegram.exe")
    (root / "Tools/Telegram/TelegramForcePortable").mkdir()
    (root / "Users/dave").mkdir()
    (root / "Users/Public/Desktop").mkdir(parents=True)
    (root / "Users/Default/AppData/Roaming").mkdir(parents=True)
    touch(root / "Program Files/7-Zip/7z.exe")
    return root


def sensor_for(root: Path, engine: Engine, registry: RecordedRegistry | None
               ) -> InstalledAppsSensor:
    return InstalledAppsSensor(root, "windows", engine.folder_marker_files,
                               engine.folder_marker_globs, registry=registry)


def registry_of(data: dict[str, Any]) -> RecordedRegistry:
    return RecordedRegistry(data["keys"], data.get("denied", []))


def denied(sensor: InstalledAppsSensor, engine: Engine) -> list[Finding]:
    return [f for f in engine.evaluate_all(sensor.scan()) if f.verdict == "deny"]


def one(findings: list[Finding], **evidence: object) -> Finding:
    hits = [f for f in findings if all(f.evidence.get(k) == v for k, v in evidence.items())]
    assert len(hits) == 1, f"expected one finding with {evidence}, got {findings}"
    assert (hits[0].app, hits[0].verdict, hits[0].alternative) == ("telegram", "deny", "signal")
    return hits[0]


def test_recorded_machine_every_telegram_install_is_denied(
        drive: Path, win_engine: Engine) -> None:
    sensor = sensor_for(drive, win_engine,
                        RecordedRegistry.from_json(DATA / "windows_registry.json"))
    findings = denied(sensor, win_engine)

    finding = one(findings, source="windows_uninstall", id=TELEGRAM_KEY)
    assert finding.evidence == {
        "source": "windows_uninstall", "id": TELEGRAM_KEY, "user": "bob", "version": "5.12.3",
        "path": "C:/Users/bob/AppData/Roaming/Telegram Desktop",
        "display_name": "Telegram Desktop", "publisher": "Telegram FZ-LLC"}
    assert finding.matched == f"installed.windows_uninstall_keys: {TELEGRAM_KEY}"
    finding = one(findings, source="windows_uninstall", id=AYUGRAM_KEY)
    assert (finding.evidence["display_name"], finding.evidence["publisher"]) == (
        "AyuGram Desktop", "Radolyn Labs")
    finding = one(findings, source="msix")
    assert finding.evidence == {
        "source": "msix", "id": "TelegramMessengerLLP.TelegramDesktop_t4vj0pshhgkwm",
        "version": "5.12.3.0", "user": "bob",
        "path": f"C:/Program Files/WindowsApps/{TELEGRAM_MSIX}"}
    finding = one(findings, source="folder",
                  path="C:/Users/bob/AppData/Roaming/Telegram Desktop")
    assert finding.evidence["user"] == "bob"
    assert finding.matched == "installed.folders.path: %APPDATA%/Telegram Desktop"
    one(findings, source="folder", path="C:/Users/bob/AppData/Roaming/AyuGram Desktop")
    finding = one(findings, source="folder", path="C:/Users/carol/Downloads/Telegram")
    assert finding.evidence["user"] == "carol"
    assert finding.matched == "installed.folders.contains: ['Telegram.exe', 'Updater.exe']"
    finding = one(findings, source="folder", path="C:/Tools/Telegram")
    assert finding.matched == ("installed.folders.contains: "
                               "['Telegram.exe', 'TelegramForcePortable']")
    assert len(findings) == 7


def test_what_could_not_be_read_is_said(
        drive: Path, recorded: dict[str, Any], win_engine: Engine) -> None:
    sensor = sensor_for(drive, win_engine, registry_of(recorded))
    sensor.scan()
    assert sensor.warnings == [
        "could not read the registry of dave (HKU\\S-1-5-21-3623811015-3361044348-30300820-1003"
        "): access denied; run the agent as Administrator or SYSTEM to see every user's installs",
        "the registry of carol is not loaded (not logged on), so their per-user installs and "
        "Store apps were not read; their folders were still searched",
    ]


def test_signal_and_other_apps_are_not_flagged(
        drive: Path, recorded: dict[str, Any], win_engine: Engine) -> None:
    sensor = sensor_for(drive, win_engine, registry_of(recorded))
    observations = sensor.scan()
    by_id = {obs.id: obs for obs in observations}
    signal = by_id["7d96caee-06e6-597c-9f2f-c7bb2e0948b4"]
    assert (signal.display_name, signal.publisher, signal.user) == (
        "Signal 7.60.0", "Signal Messenger, LLC", "bob")

    findings = win_engine.evaluate_all(observations, include_allowed=True)
    allowed = {(f.evidence["source"], f.evidence["path"]) for f in findings if f.app == "signal"}
    assert allowed == {
        ("windows_uninstall", "C:/Users/bob/AppData/Local/Programs/signal-desktop"),
        ("folder", "C:/Users/bob/AppData/Local/Programs/signal-desktop"),
        ("folder", "C:/Users/bob/AppData/Roaming/Signal")}
    assert {f.verdict for f in findings if f.app == "signal"} == {"allow"}
    # 7-Zip, Notepad++, WebView2, OneDrive, Notepad, Calculator: seen, not judged.
    assert {"7-Zip", "Notepad++", "OneDriveSetup.exe", "Microsoft.WindowsNotepad_8wekyb3d8bbwe",
            "Microsoft.WindowsCalculator_8wekyb3d8bbwe"} <= set(by_id)
    flagged = {f.evidence["id"] for f in findings if f.app != "signal"}
    assert not flagged & {"7-Zip", "Notepad++", "OneDriveSetup.exe"}


def test_uninstalling_resolves_each_finding(
        drive: Path, recorded: dict[str, Any], win_engine: Engine) -> None:
    # What the machine looks like once each install was removed: the uninstaller
    # deletes its key and folder; Remove-AppxPackage deletes the package key.
    keys = recorded["keys"]
    for key in (f"HKU\\{BOB_SID}\\{UNINSTALL}\\{TELEGRAM_KEY}",
                f"HKU\\{BOB_SID}\\{UNINSTALL}\\{AYUGRAM_KEY}",
                f"HKU\\{BOB_SID}{PACKAGES}\\{TELEGRAM_MSIX}"):
        del keys[key]
    for folder in ("Users/bob/AppData/Roaming/Telegram Desktop",
                   "Users/bob/AppData/Roaming/AyuGram Desktop",
                   "Users/carol/Downloads/Telegram", "Tools/Telegram"):
        shutil.rmtree(drive / folder)

    sensor = sensor_for(drive, win_engine, registry_of(recorded))
    assert denied(sensor, win_engine) == []
    assert "OneDriveSetup.exe" in {obs.id for obs in sensor.scan()}  # the hive was still read


def test_hkcu_classes_link_is_read_when_the_classes_hive_is_not_listed(
        tmp_path: Path, win_engine: Engine) -> None:
    # Some recordings show the classes hive only through HKU\<SID>\Software\Classes.
    path = (f"HKU\\{BOB_SID}\\Software\\Classes\\Local Settings\\Software\\Microsoft\\Windows"
            f"\\CurrentVersion\\AppModel\\Repository\\Packages\\{TELEGRAM_MSIX}")
    registry = RecordedRegistry({path: {"PackageRootFolder": "C:\\Program Files\\WindowsApps\\x"}})
    (tmp_path / "Users").mkdir()
    finding = one(denied(sensor_for(tmp_path, win_engine, registry), win_engine), source="msix")
    assert finding.evidence["user"] == BOB_SID  # no profile recorded: the SID stands in


def test_without_a_registry_the_folders_are_still_searched(
        drive: Path, win_engine: Engine) -> None:
    # Reading a Windows disk from Linux: no live registry to ask.
    sensor = sensor_for(drive, win_engine, None)
    findings = denied(sensor, win_engine)
    assert {f.evidence["source"] for f in findings} == {"folder"}
    assert len(findings) == 4
    assert sensor.warnings == [
        "the Windows registry of this machine cannot be read here, so uninstall entries and "
        "Store (MSIX) packages were not checked"]


@pytest.mark.parametrize(("full_name", "family"), [
    (TELEGRAM_MSIX, ("TelegramMessengerLLP.TelegramDesktop_t4vj0pshhgkwm", "5.12.3.0")),
    # A bundle has a resource id of "~"; a resource package names its language.
    ("Microsoft.WindowsCalculator_11.2405.2.0_neutral_~_8wekyb3d8bbwe",
     ("Microsoft.WindowsCalculator_8wekyb3d8bbwe", "11.2405.2.0")),
    ("38833FF26BA1D.UnigramPreview_11.5.0.0_x64_split.language-de_g9c9v27vpyspw",
     ("38833FF26BA1D.UnigramPreview_g9c9v27vpyspw", "11.5.0.0")),
    ("NotAFullName", None),
    ("Name_1.0_x64_", None),
])
def test_package_family_from_full_name(full_name: str, family: tuple[str, str] | None) -> None:
    assert package_family(full_name) == family


def test_recorded_registry_reads_like_windows() -> None:
    registry = RecordedRegistry(
        {"HKEY_LOCAL_MACHINE\\SOFTWARE\\Vendor\\App": {"Version": "1.0"},
         "HKLM\\SOFTWARE\\Vendor\\Other": {}},
        denied=["HKLM\\SOFTWARE\\Secret"])
    # Case-insensitive names; parents implied by their children; absent keys are empty.
    assert registry.subkeys("hklm", "software\\VENDOR") == ["App", "Other"]
    assert registry.subkeys("HKLM", "") == ["SOFTWARE"]
    assert registry.values("HKLM", "Software\\Vendor\\app") == {"Version": "1.0"}
    assert registry.values("HKLM", "Software\\Nothing") == {}
    assert registry.subkeys("HKU", "") == []
    with pytest.raises(PermissionError):
        registry.subkeys("HKLM", "SOFTWARE\\Secret\\Below")


def test_watch_paths(drive: Path, recorded: dict[str, Any], win_engine: Engine) -> None:
    sensor = sensor_for(drive, win_engine, registry_of(recorded))
    paths = sensor.watch_paths()
    for expected in ("Users/bob/AppData/Roaming", "Users/bob/AppData/Local/Programs",
                     "Program Files", "Users"):
        assert drive / expected in paths
    assert drive / "Users/carol/Downloads" in sensor.recursive_watch_paths()
    assert drive / "Users/Public" not in paths
