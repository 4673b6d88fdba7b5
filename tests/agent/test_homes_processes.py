"""A banned app run from a home outside /home is found by a real process sensor."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.host.platform import host_context, user_homes
from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.processes import ProcessSensor
from agent.sensors.procfs import ProcfsReader
from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy
from tests.agent.conftest import SLEEP, wait_for

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

FLATPAK_BIN = ".local/share/flatpak/app/org.telegram.desktop/current/active/files/bin"


@pytest.fixture
def user_flatpak_telegram(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A user Flatpak Telegram, as it would run from /srv/people/alice."""
    home = tmp_path / "srv" / "people" / "alice"
    exe = home / FLATPAK_BIN / "telegram-desktop"
    exe.parent.mkdir(parents=True)
    shutil.copyfile(SLEEP, exe)
    exe.chmod(0o755)
    process = subprocess.Popen([str(exe), "300"])
    try:
        yield home, process
    finally:
        process.kill()
        process.wait()


def test_a_user_flatpak_in_an_unusual_home_is_detected(
    user_flatpak_telegram: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    home, process = user_flatpak_telegram
    catalog = load_catalog()
    bundle = compile_bundle(load_policy(default_policy_path(), catalog), catalog)
    events: list[dict[str, object]] = []
    engine = Engine(bundle, HostContext(os="linux", homes=(str(home),)))
    watch = Watch(engine, Sensors(processes=ProcessSensor(ProcfsReader())), events.append,
                  timing=WatchTiming(process_interval=0.001))
    watch.start()

    def opened() -> dict[str, object] | None:
        watch.step()
        return next((e for e in events if e["event"] == "opened" and e.get("pid") == process.pid),
                    None)

    event = wait_for(opened, what="the flatpak Telegram in /srv/people/alice")
    assert event["app"] == "telegram"
    assert "process.exe_globs: ~/.local/share/flatpak/app/org.telegram.desktop/**" in str(
        event["matched"])


def test_the_agent_tells_the_engine_about_this_machines_homes() -> None:
    homes = user_homes("linux")
    # /etc/passwd lists root's home; it is readable when the tests run as root.
    readable_root = Path("/root").is_dir() and os.access("/root", os.R_OK)
    assert ("/root" in homes) == readable_root
    assert host_context("linux").homes == homes
    assert host_context("macos").homes == ()
