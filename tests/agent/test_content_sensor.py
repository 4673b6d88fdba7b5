"""The content sensor on Debian's real Telegram Desktop, renamed: at rest and running.

The binary is /usr/bin/telegram-desktop from the `telegram-desktop` package (CI
installs it, .ci/run). It runs offscreen (QT_QPA_PLATFORM=offscreen) inside a
new network namespace with no interface up (`unshare -n`), so it never talks
to anyone; its HOME is the test's folder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.scanning.sensor_set import SensorChoice, already_identified, content_identifier
from agent.sensors.content import ContentIdentifier, ReadBudget
from agent.sensors.executable_meta import read_order
from agent.sensors.installed import InstalledAppsSensor
from agent.sensors.processes import ProcessSensor
from policies.content_match import ContentMatcher
from policies.engine import Engine
from tests.agent.conftest import wait_for

TELEGRAM = Path("/usr/bin/telegram-desktop")
UNSHARE = shutil.which("unshare")
THEME = "telegram/tdesktop-theme-format"
IDENTITY = "telegram/tdesktop-app-identity"

needs_telegram = pytest.mark.skipif(not TELEGRAM.is_file(),
                                    reason="needs Debian's telegram-desktop (.ci/run installs it)")


def _identifier(engine: Engine, **kwargs: object) -> ContentIdentifier:
    return ContentIdentifier(ContentMatcher(engine.apps, "linux"), **kwargs)  # type: ignore[arg-type]


def _copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(0o755)
    return target


@pytest.fixture(scope="module")
def renamed_telegram(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One renamed copy for the module: 75 MB is copied once."""
    if not TELEGRAM.is_file():
        pytest.skip("needs Debian's telegram-desktop (.ci/run installs it)")
    return _copy(TELEGRAM, tmp_path_factory.mktemp("tools") / "notes")


@needs_telegram
def test_a_renamed_telegram_at_rest_in_a_home_is_a_high_deny_read_once(
        tmp_path: Path, default_engine: Engine, renamed_telegram: Path) -> None:
    downloads = tmp_path / "home/alice/Downloads/unpacked"
    downloads.mkdir(parents=True)
    os.link(renamed_telegram, downloads / "notes") if _same_fs(renamed_telegram, tmp_path) \
        else _copy(renamed_telegram, downloads / "notes")
    (tmp_path / "home/alice/Desktop").mkdir()
    (tmp_path / "home/alice/Desktop/readme.txt").write_text("not a program\n" * 1000)
    _copy(Path(sys.executable).resolve(), tmp_path / "opt/python/python")
    content = _identifier(default_engine)
    sensor = InstalledAppsSensor(tmp_path, "linux", content=content)

    found = [obs for obs in sensor.scan() if obs.source == "file"]
    assert [(obs.id, obs.user) for obs in found] == [
        ("/home/alice/Downloads/unpacked/notes", "alice")]
    [finding] = default_engine.evaluate(found[0])
    assert (finding.app, finding.verdict, finding.confidence, finding.sensor) == (
        "telegram", "deny", "high", "installed")
    assert finding.matched in (f"content: {THEME}", f"content: {IDENTITY}")
    # Reading stops at the first complete match: one signature is enough to name the app.
    assert finding.evidence["content_signatures"] in ([THEME], [IDENTITY], [THEME, IDENTITY])

    # Unchanged files are never read again; a changed one is.
    read = content.stats.bytes_read
    # Read-only data first: Telegram is known before most of its 75 MB are read.
    assert 0 < read < renamed_telegram.stat().st_size / 2
    assert [obs.id for obs in sensor.scan() if obs.source == "file"] == [found[0].id]
    assert content.stats.bytes_read == read
    (tmp_path / "home/alice/Desktop/readme.txt").write_text("changed\n")
    sensor.scan()
    assert 0 < content.stats.bytes_read - read < 1024


@needs_telegram
def test_reads_are_capped_per_file_and_paced(default_engine: Engine, renamed_telegram: Path
                                             ) -> None:
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:  # a driven clock: no real waiting
        slept.append(seconds)
        now[0] += seconds

    budget = ReadBudget(rate=10 * 1024 * 1024, burst=20 * 1024 * 1024,
                        clock=lambda: now[0], sleep=sleep)
    content = _identifier(default_engine, budget=budget, max_file_bytes=40 * 1024 * 1024)
    # The signatures' strings lie past the cap in this build (from 51 MB on): unseen.
    refs = content.identify_file(renamed_telegram, beneath=renamed_telegram.parent)
    assert content.stats.bytes_read == 40 * 1024 * 1024
    assert refs == ()
    # 40 MiB at 10 MiB/s after a 20 MiB burst: 2 s of waiting, spread over the reads.
    assert sum(slept) == pytest.approx(2.0, abs=0.5)
    assert len(slept) > 3


def test_a_file_that_is_no_program_stops_after_its_first_bytes(
        tmp_path: Path, default_engine: Engine) -> None:
    big = tmp_path / "movie.mkv"
    big.write_bytes(b"\x1aE\xdf\xa3" + b"TelegramForcePortable TelegramDesktop " * 300_000)
    content = _identifier(default_engine)
    assert content.identify_file(big, beneath=tmp_path) == ()
    assert content.stats.bytes_read <= 64 * 1024


def test_the_files_known_stay_bounded_the_least_recently_seen_read_again(
        tmp_path: Path, default_engine: Engine) -> None:
    # An ELF that is no messenger: read to its end, then known by its identity.
    files = []
    for index in range(5):
        files.append(tmp_path / f"tool-{index}")
        files[-1].write_bytes(b"\x7fELF" + bytes(range(256)) * 300 + bytes([index]))
    content = _identifier(default_engine, max_entries=3)
    for path in files:
        assert content.identify_file(path, beneath=tmp_path) == ()
    assert content.stats.files_read == 5
    # The three last seen are known; the first two were forgotten, and are read again.
    for path in files[2:]:
        content.identify_file(path, beneath=tmp_path)
    assert (content.stats.files_read, content.stats.cache_hits) == (5, 3)
    content.identify_file(files[0], beneath=tmp_path)
    assert content.stats.files_read == 6
    assert len(content._cache) == 3


@needs_telegram
def test_a_process_the_policy_already_names_is_not_read(default_engine: Engine) -> None:
    content = _identifier(default_engine)
    sensor = ProcessSensor(content=content, identified=lambda observation: True)
    sensor.scan()
    assert content.stats.files_read == 0
    sensor = ProcessSensor(content=content, identified=already_identified(default_engine))
    sensor.scan()
    assert content.stats.files_read > 0


@pytest.fixture
def offline_telegram(tmp_path: Path, renamed_telegram: Path) -> Iterator[subprocess.Popen[bytes]]:
    if UNSHARE is None or subprocess.run([UNSHARE, "-n", "true"], check=False).returncode:
        pytest.skip("needs unshare -n (root) to run Telegram without a network")
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    process = subprocess.Popen([UNSHARE, "-n", str(renamed_telegram)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@needs_telegram
def test_a_renamed_telegram_running_offline_is_denied_by_the_process_sensor(
        default_engine: Engine, offline_telegram: subprocess.Popen[bytes]) -> None:
    sensor = ProcessSensor(content=_identifier(default_engine),
                           identified=already_identified(default_engine))
    sensor.scan()

    def telegram_seen() -> list[object]:
        sensor.poll()
        return [finding for observation in sensor.observations()
                if observation.pid == offline_telegram.pid and observation.name == "notes"
                for finding in default_engine.evaluate(observation)]

    [finding] = wait_for(telegram_seen, what="the renamed Telegram's finding")
    assert (finding.app, finding.verdict, finding.confidence) == (  # type: ignore[attr-defined]
        "telegram", "deny", "high")
    assert finding.evidence["exe"].endswith("/notes")  # type: ignore[attr-defined]
    assert finding.matched.startswith("content: telegram/")  # type: ignore[attr-defined]


@needs_telegram
def test_warden_agent_watch_reports_a_renamed_telegram_as_it_starts(
        tmp_path: Path, renamed_telegram: Path) -> None:
    if UNSHARE is None or subprocess.run([UNSHARE, "-n", "true"], check=False).returncode:
        pytest.skip("needs unshare -n (root) to run Telegram without a network")
    env = {**os.environ, "WARDEN_AGENT_STATE_DIR": str(tmp_path / "state"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    agent = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "watch", "--json", "--no-installed",
         "--no-network"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    telegram = None
    try:
        assert agent.stderr is not None and agent.stdout is not None
        wait_for(lambda: "watching" in agent.stderr.readline(), what="the agent to start")
        home = tmp_path / "home"
        home.mkdir()
        telegram = subprocess.Popen(
            [UNSHARE, "-n", str(renamed_telegram)], start_new_session=True,
            env={"PATH": "/usr/bin:/bin", "HOME": str(home), "QT_QPA_PLATFORM": "offscreen",
                 "XDG_RUNTIME_DIR": str(tmp_path)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        pid = telegram.pid

        def opened() -> dict[str, object] | None:
            event = json.loads(agent.stdout.readline())
            evidence = event.get("evidence", {})
            return event if evidence.get("pid") == pid and event.get("app") == "telegram" \
                else None

        event = wait_for(opened, what="the finding for the renamed Telegram")
        assert event["verdict"] == "deny" and event["confidence"] == "high"
        assert str(event["matched"]).startswith("content: telegram/")
    finally:
        if telegram is not None:
            os.killpg(telegram.pid, signal.SIGKILL)
            telegram.wait()
        agent.terminate()
        agent.communicate(timeout=20)


@needs_telegram
def test_a_program_dpkg_installed_is_not_read_until_it_changes(
        tmp_path: Path, default_engine: Engine, renamed_telegram: Path) -> None:
    program = _copy(renamed_telegram, tmp_path / "opt/chat/chat")
    listing = tmp_path / "var/lib/dpkg/info/chat.list"
    listing.parent.mkdir(parents=True)
    listing.write_text("/opt\n/opt/chat\n/opt/chat/chat\n")
    # dpkg wrote its list after the file was put in place: vouched for, not read.
    later = program.stat().st_ctime + 60
    os.utime(listing, (later, later))
    content = content_identifier(default_engine, SensorChoice(root=tmp_path))
    assert content is not None
    sensor = InstalledAppsSensor(tmp_path, "linux", content=content)
    assert [obs for obs in sensor.scan() if obs.source == "file"] == []
    assert (content.stats.vouched, content.stats.bytes_read) == (1, 0)
    # The file changed after the package was installed (its ctime is later): read, found.
    os.utime(listing, (later - 3600, later - 3600))
    os.utime(listing.parent, None)  # the info folder changed: the index is rebuilt
    os.utime(program, None)
    [found] = [obs for obs in sensor.scan() if obs.source == "file"]
    assert found.id == "/opt/chat/chat" and set(found.content) & {THEME, IDENTITY}


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def test_no_content_signatures_means_no_reader(tmp_path: Path) -> None:
    from tests.agent.conftest import engine_from_text

    engine = engine_from_text("name: t\nrules:\n  - app: signal\n    verdict: allow\n")
    assert content_identifier(engine, SensorChoice()) is None


def test_read_order_skips_the_code_of_an_elf_and_nothing_else(
        default_engine: Engine) -> None:
    if not TELEGRAM.is_file():
        pytest.skip("needs Debian's telegram-desktop (.ci/run installs it)")
    size = TELEGRAM.stat().st_size
    with TELEGRAM.open("rb") as handle:
        header = handle.read(64 * 1024)
    ranges = read_order(header, size)
    read = sum(length for _, length in ranges)
    # Data segments only: well under half of the file, holding every signature string.
    assert 0 < read < size / 2
    data = TELEGRAM.read_bytes()
    for text in ("colors.tdesktop-theme", ":/gui/night.tdesktop-theme"):
        where = data.find(text.encode())
        assert any(start <= where < start + length for start, length in ranges)
    # Headers that do not add up, and files that are no ELF, are read whole.
    for bad in (b"\x7fELF\x02\x01" + b"\xff" * 100, b"\x7fELF\x01\x01" + b"\0" * 100, b"MZ"):
        assert read_order(bad, 1000) == [(0, 1000)]
