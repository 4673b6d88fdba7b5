"""The installed-apps sensor on real Linux install layouts, built in a temporary root.

Each layout is what the install really leaves on disk (reference:
shared/reference/app-catalog.md §1.3). The stock default policy and catalog
judge the observations, so these tests prove the shipped catalog recognises
real installs; removing the files must make the finding go away.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.installed_linux import parse_dpkg_status
from policies.engine import Engine, Finding
from tests.unprivileged import Unprivileged

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
bob:x:1001:1001:Bob,,,:/home/bob:/bin/bash
carol:x:1002:1002:Carol,,,:/srv/carol:/bin/bash
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""

TELEGRAM_STANZA = """\
Package: telegram-desktop
Status: {status}
Priority: optional
Section: net
Installed-Size: 113437
Maintainer: Nicholas Guriev <guriev-ns@ya.ru>
Architecture: amd64
Version: 4.6.5+ds-2+deb12u1
Depends: libc6 (>= 2.34), libqt5core5a (>= 5.15.1)
Description: fast and secure messaging application
 Official desktop client for the Telegram messenger, based on the
 Telegram API and the MTProto secure protocol.
 .
 Version: 99 (a field-looking continuation line must not be read as a field)
Homepage: https://desktop.telegram.org
"""

OTHER_STANZAS = """\
Package: bash
Essential: yes
Status: install ok installed
Priority: required
Architecture: amd64
Version: 5.2.15-2+b2
Description: GNU Bourne Again SHell

Package: kotatogram-desktop
Status: deinstall ok config-files
Architecture: amd64
Version: 1.4.9-1
Description: removed earlier; only its configuration files remain
"""


def write(path: Path, text: str = "", mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)
    return path


def dpkg_status(root: Path, telegram_status: str = "install ok installed") -> None:
    write(root / "var/lib/dpkg/status",
          OTHER_STANZAS + "\n" + TELEGRAM_STANZA.format(status=telegram_status))


def make_machine(root: Path) -> Path:
    write(root / "etc/passwd", PASSWD)
    for home in ("home/alice", "home/bob", "srv/carol", "root"):
        (root / home).mkdir(parents=True)
    return root


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    return make_machine(tmp_path / "machine")


def sensor_for(root: Path, engine: Engine) -> InstalledAppsSensor:
    return InstalledAppsSensor(root, "linux", engine.folder_marker_files,
                               engine.folder_marker_globs)


def denied(sensor: InstalledAppsSensor, engine: Engine) -> list[Finding]:
    return [finding for finding in engine.evaluate_all(sensor.scan())
            if finding.verdict == "deny"]


def one(findings: list[Finding], **evidence: object) -> Finding:
    """The single finding whose evidence has all these items."""
    hits = [f for f in findings if all(f.evidence.get(k) == v for k, v in evidence.items())]
    assert len(hits) == 1, f"expected one finding with {evidence}, got {findings}"
    finding = hits[0]
    assert (finding.app, finding.verdict, finding.sensor) == ("telegram", "deny", "installed")
    assert finding.alternative == "signal"
    return finding


def test_dpkg_package_is_denied_and_apt_remove_resolves_it(
        machine: Path, default_engine: Engine) -> None:
    dpkg_status(machine)
    sensor = sensor_for(machine, default_engine)

    finding = one(denied(sensor, default_engine), source="deb")
    assert finding.evidence["package"] == "telegram-desktop"
    assert finding.evidence["version"] == "4.6.5+ds-2+deb12u1"
    assert finding.matched == "installed.deb: telegram-desktop"
    # kotatogram-desktop is in config-files state: removed, so not reported.
    assert {obs.id for obs in sensor.scan() if obs.source == "deb"} == {"bash",
                                                                        "telegram-desktop"}

    # `apt remove` leaves the package in config-files state.
    dpkg_status(machine, "deinstall ok config-files")
    assert denied(sensor, default_engine) == []
    assert sensor.warnings == []


@pytest.mark.parametrize(("status", "present"), [
    ("install ok installed", True),
    ("hold ok installed", True),            # pinned, still installed
    ("deinstall ok installed", True),       # marked for removal, files still there
    ("install ok unpacked", True),          # files on disk, not configured yet
    ("install ok triggers-pending", True),
    ("deinstall ok config-files", False),   # apt remove
    ("purge ok not-installed", False),      # apt purge
    ("install reinstreq half-installed", False),
])
def test_dpkg_states(status: str, present: bool) -> None:
    packages = parse_dpkg_status(TELEGRAM_STANZA.format(status=status))
    assert [p.id for p in packages] == (["telegram-desktop"] if present else [])


def test_desktop_files_system_and_tarball_made(machine: Path, default_engine: Engine) -> None:
    system = write(machine / "usr/share/applications/org.telegram.desktop.desktop",
                   "[Desktop Entry]\nName=Telegram Desktop\nExec=/usr/bin/telegram-desktop -- %u\n")
    # The tarball's first run writes a .desktop file named after the md5 of its folder,
    # and an autostart entry when the user ticks "launch at startup".
    tarball_name = "org.telegram.desktop._8a5c6f3e1b0d4a7c9e2f1d0c3b4a5e6f.desktop"
    user = write(machine / "home/alice/.local/share/applications" / tarball_name)
    autostart = write(machine / "home/bob/.config/autostart" / tarball_name)
    write(machine / "usr/share/applications/firefox-esr.desktop")
    sensor = sensor_for(machine, default_engine)

    findings = denied(sensor, default_engine)
    assert len(findings) == 3
    finding = one(findings, path="/usr/share/applications/org.telegram.desktop.desktop")
    assert finding.evidence["user"] is None
    assert finding.matched == "installed.desktop_files: org.telegram.desktop.desktop"
    finding = one(findings, path=f"/home/alice/.local/share/applications/{tarball_name}")
    assert finding.evidence["user"] == "alice"
    assert finding.matched == "installed.desktop_files: org.telegram.desktop._*.desktop"
    assert one(findings, path=f"/home/bob/.config/autostart/{tarball_name}"
               ).evidence["user"] == "bob"

    for path in (system, user, autostart):
        path.unlink()
    assert denied(sensor, default_engine) == []


def flatpak_tree(base: Path, app_id: str, version: str) -> Path:
    """A flatpak deploy: app/<id>/current -> <arch>/<branch>, <branch>/active -> <commit>."""
    app = base / "app" / app_id
    commit = app / "x86_64/stable/4f1c0e9b2d7a"
    write(commit / "files/bin/Telegram", "binary")
    write(commit / "files/share/metainfo" / f"{app_id}.metainfo.xml",
          f'<component><releases><release version="{version}" date="2025-01-01"/>'
          '<release version="0.1"/></releases></component>')
    write(commit / "metadata", f"[Application]\nname={app_id}\ncommand=Telegram\n")
    (app / "x86_64/stable/active").symlink_to("4f1c0e9b2d7a")
    (app / "current").symlink_to("x86_64/stable")
    exports = base / "exports/share/applications"
    exports.mkdir(parents=True, exist_ok=True)
    (exports / f"{app_id}.desktop").symlink_to(
        f"../../../app/{app_id}/current/active/export/share/applications/{app_id}.desktop")
    return app


def test_flatpak_system_and_user_installs(machine: Path, default_engine: Engine) -> None:
    system = flatpak_tree(machine / "var/lib/flatpak", "org.telegram.desktop", "5.12.3")
    user = flatpak_tree(machine / "home/bob/.local/share/flatpak", "org.telegram.desktop",
                        "5.10.0")
    sensor = sensor_for(machine, default_engine)

    findings = denied(sensor, default_engine)
    finding = one(findings, source="flatpak", user=None)
    assert finding.evidence["path"] == "/var/lib/flatpak/app/org.telegram.desktop"
    assert finding.evidence["version"] == "5.12.3"
    assert finding.matched == "installed.flatpak: org.telegram.desktop"
    finding = one(findings, source="flatpak", user="bob")
    assert finding.evidence["path"] == "/home/bob/.local/share/flatpak/app/org.telegram.desktop"
    assert finding.evidence["version"] == "5.10.0"
    one(findings, source="desktop",
        path="/var/lib/flatpak/exports/share/applications/org.telegram.desktop.desktop")
    one(findings, source="desktop", user="bob")

    for base, app in ((machine / "var/lib/flatpak", system),
                      (machine / "home/bob/.local/share/flatpak", user)):
        shutil.rmtree(app)
        (base / "exports/share/applications/org.telegram.desktop.desktop").unlink()
    assert denied(sensor, default_engine) == []


def test_snap_install(machine: Path, default_engine: Engine) -> None:
    snap = machine / "snap/telegram-desktop"
    write(snap / "6420/meta/snap.yaml", "name: telegram-desktop\nversion: '5.1.1'\n"
          "summary: Official desktop client\n")
    (snap / "current").symlink_to("6420")
    write(machine / "snap/bin/telegram-desktop")  # snapd's command wrappers: not a snap
    write(machine / "var/lib/snapd/snaps/telegram-desktop_6420.snap", "squashfs")
    desktop = write(machine / "var/lib/snapd/desktop/applications/"
                    "telegram-desktop_telegram-desktop.desktop")
    sensor = sensor_for(machine, default_engine)

    findings = denied(sensor, default_engine)
    finding = one(findings, source="snap")
    assert (finding.evidence["id"], finding.evidence["path"], finding.evidence["version"]) == (
        "telegram-desktop", "/snap/telegram-desktop", "5.1.1")
    one(findings, source="desktop", path="/var/lib/snapd/desktop/applications/"
                                          "telegram-desktop_telegram-desktop.desktop")
    assert "bin" not in {obs.id for obs in sensor.scan() if obs.source == "snap"}

    # `snap remove` unmounts and deletes all three.
    shutil.rmtree(snap)
    (machine / "var/lib/snapd/snaps/telegram-desktop_6420.snap").unlink()
    desktop.unlink()
    assert denied(sensor, default_engine) == []


def telegram_tarball(path: Path) -> Path:
    """tsetup.<ver>.tar.xz as published: Telegram/Telegram and Telegram/Updater."""
    with tarfile.open(path, "w:xz") as archive:
        for name, data in (("Telegram/Telegram", b"\x7fELF telegram"),
                           ("Telegram/Updater", b"\x7fELF updater")):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            archive.addfile(info, io.BytesIO(data))
    return path


def extract(archive: Path, into: Path) -> None:
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
        else:  # Python before 3.11.4 has no extraction filters
            tar.extractall(into)


def test_portable_tarball_found_where_people_unpack_it(
        machine: Path, tmp_path: Path, default_engine: Engine) -> None:
    archive = telegram_tarball(tmp_path / "tsetup.5.12.3.tar.xz")
    places = {
        "/home/alice/Downloads/Telegram": machine / "home/alice/Downloads",
        "/home/alice/Apps/messaging/Telegram": machine / "home/alice/Apps/messaging",
        "/home/bob/Telegram": machine / "home/bob",
        "/opt/telegram/Telegram": machine / "opt/telegram",
    }
    for folder in places.values():
        extract(archive, folder)
    # Deeper than the search goes: not looked at, by design.
    extract(archive, machine / "home/bob/a/b/c")
    # A hidden tree is not searched either.
    extract(archive, machine / "home/bob/.cache/x")
    sensor = sensor_for(machine, default_engine)

    findings = denied(sensor, default_engine)
    assert {f.evidence["path"] for f in findings} == set(places)
    finding = one(findings, path="/home/alice/Downloads/Telegram")
    assert finding.evidence["user"] == "alice"
    assert finding.matched == "installed.folders.contains: ['Telegram', 'Updater']"
    assert one(findings, path="/opt/telegram/Telegram").evidence["user"] is None

    for folder in places.values():
        shutil.rmtree(folder / "Telegram")
    assert denied(sensor, default_engine) == []


def test_data_folders_in_every_home(machine: Path, default_engine: Engine) -> None:
    alice = machine / "home/alice/.local/share/TelegramDesktop"
    write(alice / "tdata/settingss", "x")
    bob = machine / "home/bob/snap/telegram-desktop"
    write(bob / "common/.keep")
    root = machine / "root/.TelegramDesktop"
    root.mkdir()
    sensor = sensor_for(machine, default_engine)

    findings = denied(sensor, default_engine)
    assert len(findings) == 3
    finding = one(findings, path="/home/alice/.local/share/TelegramDesktop")
    assert finding.evidence["user"] == "alice"
    assert finding.matched == "installed.folders.path: ~/.local/share/TelegramDesktop"
    assert one(findings, path="/home/bob/snap/telegram-desktop").evidence["user"] == "bob"
    assert one(findings, path="/root/.TelegramDesktop").evidence["user"] == "root"

    for folder in (alice, bob, root):
        shutil.rmtree(folder)
    assert denied(sensor, default_engine) == []


def test_homes_outside_home_come_from_passwd(
        machine: Path, tmp_path: Path, default_engine: Engine) -> None:
    # carol's home is /srv/carol: only /etc/passwd says so.
    extract(telegram_tarball(tmp_path / "tsetup.tar.xz"), machine / "srv/carol")
    sensor = sensor_for(machine, default_engine)

    finding = one(denied(sensor, default_engine), path="/srv/carol/Telegram")
    assert finding.evidence["user"] == "carol"


def signal_installed(root: Path) -> None:
    write(root / "var/lib/dpkg/status", OTHER_STANZAS + "\n"
          "Package: signal-desktop\nStatus: install ok installed\nArchitecture: amd64\n"
          "Version: 7.60.0\nDescription: Private messaging from your desktop\n")
    write(root / "usr/share/applications/signal-desktop.desktop",
          "[Desktop Entry]\nName=Signal\nExec=/opt/Signal/signal-desktop --no-sandbox %U\n")
    write(root / "opt/Signal/signal-desktop", "binary", 0o755)
    write(root / "opt/Signal/resources/app.asar", "asar")
    flatpak_tree(root / "home/alice/.local/share/flatpak", "org.signal.Signal", "7.74.0")
    (root / "home/alice/.var/app/org.signal.Signal/config").mkdir(parents=True)


def test_signal_is_seen_and_allowed_never_flagged(machine: Path, default_engine: Engine) -> None:
    signal_installed(machine)
    sensor = sensor_for(machine, default_engine)

    observations = sensor.scan()
    assert [f for f in default_engine.evaluate_all(observations) if f.verdict == "deny"] == []
    allowed = default_engine.evaluate_all(observations, include_allowed=True)
    # The approved app is recognised (not merely unflagged) in each form.
    assert {(f.app, f.verdict) for f in allowed} == {("signal", "allow")}
    assert {f.evidence["source"] for f in allowed} == {"deb", "desktop", "flatpak", "folder"}


def test_clean_machine_has_no_deny_findings(machine: Path, default_engine: Engine) -> None:
    write(machine / "var/lib/dpkg/status", OTHER_STANZAS)
    write(machine / "usr/share/applications/firefox-esr.desktop")
    write(machine / "usr/share/applications/org.gnome.Nautilus.desktop")
    write(machine / "opt/google/chrome/chrome", "binary", 0o755)
    write(machine / "home/alice/Documents/report.odt")
    write(machine / "home/alice/Downloads/Updater")  # one marker name alone is no app
    write(machine / "home/bob/.local/share/applications/mimeapps.list")
    sensor = sensor_for(machine, default_engine)

    observations = sensor.scan()
    assert {obs.id for obs in observations if obs.source == "desktop"} == {
        "firefox-esr.desktop", "org.gnome.Nautilus.desktop"}
    assert default_engine.evaluate_all(observations) == []
    assert sensor.warnings == []


# Run by `nobody`: scan the machine, hand back what was seen, pickled, as base64 text.
SCAN_AS_NOBODY = """
import base64, json, pickle, sys
from pathlib import Path
from agent.sensors.installed import InstalledAppsSensor
root, files, globs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
sensor = InstalledAppsSensor(Path(root), "linux", frozenset(files), globs)
print(base64.b64encode(pickle.dumps((sensor.scan(), sensor.warnings))).decode())
"""


def scan_as_nobody(unprivileged: Unprivileged, root: Path,
                   engine: Engine) -> tuple[list[Finding], list[str]]:
    """Scan as `nobody`, in a child: the test process keeps its identity (changing
    it, even briefly, changes how /proc shows it to other tests)."""
    result = unprivileged.run(SCAN_AS_NOBODY, str(root),
                              json.dumps(sorted(engine.folder_marker_files)),
                              json.dumps(engine.folder_marker_globs))
    assert result.returncode == 0, f"the unprivileged scan failed: {result.stderr}"
    observations, scan_warnings = pickle.loads(base64.b64decode(result.stdout))
    return [f for f in engine.evaluate_all(observations) if f.verdict == "deny"], scan_warnings


def unreadable_home_machine(folder: Path) -> Path:
    """Alice's and Bob's homes each hold a Telegram install; Bob's is closed (0700)."""
    machine = make_machine(folder / "machine")
    write(machine / "home/alice/.local/share/TelegramDesktop/tdata/key_datas")
    write(machine / "home/bob/.local/share/TelegramDesktop/tdata/key_datas")
    (machine / "home/bob").chmod(0o700)
    return machine


def assert_bob_is_a_warning_and_alice_is_seen(findings: list[Finding],
                                              warnings: list[str]) -> None:
    assert [f.evidence["user"] for f in findings] == ["alice"]
    assert ("could not read /home/bob: permission denied; run as root to see every user's "
            "installs") in warnings


def test_unreadable_home_is_a_warning_and_the_rest_is_still_seen(
        world_readable_tmp: Path, default_engine: Engine, unprivileged: Unprivileged) -> None:
    machine = unreadable_home_machine(world_readable_tmp)
    # Read as an ordinary user would: bob's home is root's and closed to others.
    assert_bob_is_a_warning_and_alice_is_seen(
        *scan_as_nobody(unprivileged, machine, default_engine))


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="POSIX permissions, which root bypasses (the test above covers root)")
def test_unreadable_home_is_a_warning_for_an_ordinary_user_running_the_scan(
        world_readable_tmp: Path, default_engine: Engine) -> None:
    machine = unreadable_home_machine(world_readable_tmp)
    (machine / "home/bob").chmod(0o000)
    sensor = sensor_for(machine, default_engine)
    assert_bob_is_a_warning_and_alice_is_seen(denied(sensor, default_engine), sensor.warnings)


def fake_rpm(directory: Path, script: str) -> None:
    """An `rpm` command on PATH: this machine has no rpm, the sensor must call a real one."""
    write(directory / "rpm", f"#!/bin/sh\n{script}\n", 0o755)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs a shell script")
def test_rpm_packages_come_from_the_rpm_command(
        machine: Path, tmp_path: Path, default_engine: Engine,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (machine / "var/lib/rpm").mkdir(parents=True)
    write(machine / "var/lib/rpm/rpmdb.sqlite", "db")
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "calls"
    fake_rpm(bin_dir, f'printf "%s\\n" "$*" >> {calls}\n'
                      r'printf "bash\t5.2.26\ntelegram-desktop\t5.12.3\ngpg-pubkey\te1\n"')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    sensor = sensor_for(machine, default_engine)

    observations = [obs for obs in sensor.scan() if obs.source == "rpm"]
    assert [(obs.id, obs.version) for obs in observations] == [("bash", "5.2.26"),
                                                               ("telegram-desktop", "5.12.3")]
    assert f"-qa --root {machine}" in calls.read_text()
    # Unchanged database: not asked again.
    sensor.scan()
    assert len(calls.read_text().splitlines()) == 1

    fake_rpm(bin_dir, 'echo "error: cannot open Packages database" >&2; exit 1')
    write(machine / "var/lib/rpm/rpmdb.sqlite", "db changed")
    assert [obs for obs in sensor.scan() if obs.source == "rpm"] == []
    assert sensor.warnings == ["could not list rpm packages: error: cannot open Packages "
                               "database"]


def test_watch_paths_are_existing_install_locations(
        machine: Path, default_engine: Engine) -> None:
    (machine / "usr/share/applications").mkdir(parents=True)
    (machine / "var/lib/dpkg").mkdir(parents=True)
    (machine / "home/alice/.local/share/applications").mkdir(parents=True)
    (machine / "home/alice/Downloads").mkdir()
    sensor = sensor_for(machine, default_engine)

    paths = sensor.watch_paths()
    for expected in ("usr/share/applications", "var/lib/dpkg", "home/alice",
                     "home/alice/.local/share/applications",
                     # where ~/.local/share/TelegramDesktop would appear
                     "home/alice/.local/share", "home/alice/Downloads", "home"):
        assert machine / expected in paths
    assert all(path.is_dir() for path in paths)
    assert machine / "snap" not in paths  # absent: nothing to watch
    assert sensor.recursive_watch_paths() == [machine / "home/alice/Downloads"]


def test_unknown_os_is_refused(machine: Path) -> None:
    with pytest.raises(ValueError, match="unknown OS 'beos'"):
        InstalledAppsSensor(machine, "beos")  # type: ignore[arg-type]
