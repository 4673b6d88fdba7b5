"""The install watcher with real folders and real file-system events.

Each test waits on an event with a deadline: on_change must run because a file
appeared or vanished, and the rescan it triggers must then see the change.
"""

from __future__ import annotations

import io
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from agent.sensors.install_watch import InstallWatcher
from agent.sensors.installed import InstalledAppsSensor
from policies.engine import Engine

DEADLINE = 5.0


class Changes:
    """Counts on_change calls; a test waits for the count to pass a mark."""

    def __init__(self) -> None:
        self.count = 0
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self) -> None:
        with self._cond:
            self.count += 1
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def runs_within(self, seconds: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count > 0, timeout=seconds)

    def wait_beyond(self, mark: int, what: str) -> int:
        with self._cond:
            if not self._cond.wait_for(lambda: self.count > mark, timeout=DEADLINE):
                pytest.fail(f"on_change did not run within {DEADLINE} s after {what}")
            return self.count


@pytest.fixture
def watch() -> Iterator[Callable[..., InstallWatcher]]:
    started: list[InstallWatcher] = []

    def start(paths: list[Path], on_change: Callable[[], None],
              debounce_seconds: float = 0.05, recursive: Sequence[Path] = ()
              ) -> InstallWatcher:
        watcher = InstallWatcher(paths, on_change, debounce_seconds, recursive)
        watcher.start()
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def telegram_findings(root: Path, engine: Engine) -> list[str]:
    sensor = InstalledAppsSensor(root, "linux", engine.folder_marker_files,
                                 engine.folder_marker_globs)
    return [str(f.evidence["path"]) for f in engine.evaluate_all(sensor.scan())
            if f.app == "telegram" and f.verdict == "deny"]


def test_desktop_file_dropped_then_removed(
        tmp_path: Path, default_engine: Engine, watch: Callable[..., InstallWatcher]) -> None:
    root = tmp_path / "machine"
    applications = root / "home/alice/.local/share/applications"
    applications.mkdir(parents=True)
    changes = Changes()
    sensor = InstalledAppsSensor(root, "linux", default_engine.folder_marker_files,
                                 default_engine.folder_marker_globs)
    assert applications in sensor.watch_paths()
    watch(sensor.watch_paths(), changes)

    desktop = applications / "org.telegram.desktop.desktop"
    desktop.write_text("[Desktop Entry]\nName=Telegram Desktop\nExec=Telegram -- %u\n")
    mark = changes.wait_beyond(0, "the .desktop file was dropped")
    assert telegram_findings(root, default_engine) == [
        "/home/alice/.local/share/applications/org.telegram.desktop.desktop"]
    assert changes.threads == {"warden-install-watch"}

    desktop.unlink()
    changes.wait_beyond(mark, "the .desktop file was deleted")
    assert telegram_findings(root, default_engine) == []


def test_a_burst_of_events_is_one_call(
        tmp_path: Path, watch: Callable[..., InstallWatcher]) -> None:
    changes = Changes()
    watch([tmp_path], changes, debounce_seconds=0.5)
    for index in range(20):
        (tmp_path / f"file{index}").write_text("x")
    mark = changes.wait_beyond(0, "20 files were created")
    (tmp_path / "one-more").write_text("x")
    # Events are handled in order: had the burst made several calls, they would
    # all come before this file's call.
    assert changes.wait_beyond(mark, "one more file was created") == 2


def test_content_changes_are_not_installs(
        tmp_path: Path, watch: Callable[..., InstallWatcher]) -> None:
    log_file = tmp_path / "xsession-errors"
    log_file.write_text("")
    changes = Changes()
    watch([tmp_path], changes)
    with log_file.open("a") as handle:
        for _ in range(50):
            handle.write("noise\n")
            handle.flush()
    # Proving a negative needs a window; ten debounce periods is plenty.
    assert not changes.runs_within(0.5)
    (tmp_path / "marker").write_text("x")
    assert changes.wait_beyond(0, "a file was created") == 1


def test_followed_folders_are_dropped_when_quiet(
        tmp_path: Path, watch: Callable[..., InstallWatcher],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("agent.sensors.install_watch.FOLLOW_SECONDS", 0.3)
    changes = Changes()
    watcher = watch([tmp_path], changes)
    (tmp_path / "new-app").mkdir()
    changes.wait_beyond(0, "a folder was created")
    assert tmp_path / "new-app" in watcher.watching()
    deadline = time.monotonic() + DEADLINE
    while tmp_path / "new-app" in watcher.watching():
        assert time.monotonic() < deadline, "the followed folder was never dropped"
        time.sleep(0.02)  # polling interval of a condition
    assert watcher.watching() == [tmp_path]


def test_a_bundle_being_copied_is_followed_until_its_info_plist_lands(
        tmp_path: Path, watch: Callable[..., InstallWatcher]) -> None:
    # /Applications is watched flat; the copy of Telegram.app happens below it.
    applications = tmp_path / "Applications"
    applications.mkdir()
    changes = Changes()
    watch([applications], changes)

    app = applications / "Telegram.app"
    app.mkdir()
    mark = changes.wait_beyond(0, "the bundle folder appeared")
    (app / "Contents").mkdir()
    mark = changes.wait_beyond(mark, "Contents appeared inside the new bundle")
    (app / "Contents/Info.plist").write_text("<plist/>")
    changes.wait_beyond(mark, "Info.plist landed two levels below the watched folder")


def test_archive_unpacked_deep_in_downloads(
        tmp_path: Path, default_engine: Engine, watch: Callable[..., InstallWatcher]) -> None:
    root = tmp_path / "machine"
    apps = root / "home/alice/Downloads/apps"
    apps.mkdir(parents=True)
    sensor = InstalledAppsSensor(root, "linux", default_engine.folder_marker_files,
                                 default_engine.folder_marker_globs)
    changes = Changes()
    watch(sensor.watch_paths(), changes, recursive=sensor.recursive_watch_paths())

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as archive:
        for name in ("Telegram/Telegram", "Telegram/Updater"):
            info = tarfile.TarInfo(name)
            info.size, info.mode = 4, 0o755
            archive.addfile(info, io.BytesIO(b"\x7fELF"))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer, mode="r:xz") as archive:
        for member in archive.getmembers():
            # Member by member, as an archive manager does.
            data = archive.extractfile(member)
            assert data is not None
            target = apps / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data.read())

    deadline = time.monotonic() + DEADLINE
    mark = 0
    # Events can arrive in more than one burst; each on_change is one rescan.
    while telegram_findings(root, default_engine) != ["/home/alice/Downloads/apps/Telegram"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("the unpacked tarball was not found before the deadline")
        mark = changes.wait_beyond(mark, "the tarball was unpacked")


def test_a_failing_rescan_does_not_end_the_watching(
        tmp_path: Path, watch: Callable[..., InstallWatcher],
        caplog: pytest.LogCaptureFixture) -> None:
    changes = Changes()

    def flaky() -> None:
        changes()
        if changes.count == 1:
            raise RuntimeError("the rescan broke")

    watch([tmp_path], flaky)
    (tmp_path / "one").write_text("x")
    mark = changes.wait_beyond(0, "the first file")
    (tmp_path / "two").write_text("x")
    changes.wait_beyond(mark, "the second file")
    assert "install rescan failed" in caplog.text


def test_missing_path_is_a_warning_and_the_others_are_watched(
        tmp_path: Path, watch: Callable[..., InstallWatcher]) -> None:
    changes = Changes()
    watcher = watch([tmp_path / "absent", tmp_path], changes)
    assert len(watcher.warnings) == 1
    assert watcher.warnings[0].startswith(f"could not watch {tmp_path / 'absent'}: ")
    (tmp_path / "file").write_text("x")
    changes.wait_beyond(0, "a file was created in the watched folder")


def test_update_watches_a_folder_that_appeared(
        tmp_path: Path, watch: Callable[..., InstallWatcher]) -> None:
    changes = Changes()
    first = tmp_path / "first"
    first.mkdir()
    watcher = watch([first], changes)
    later = tmp_path / "later"
    later.mkdir()
    watcher.update([first, later])
    (later / "file").write_text("x")
    changes.wait_beyond(0, "a file was created in the folder added by update()")


def test_stop_ends_the_worker_thread(tmp_path: Path) -> None:
    changes = Changes()
    watcher = InstallWatcher([tmp_path], changes, 0.05)
    watcher.start()
    (tmp_path / "file").write_text("x")
    changes.wait_beyond(0, "a file was created")
    watcher.stop()
    assert "warden-install-watch" not in {thread.name for thread in threading.enumerate()}
