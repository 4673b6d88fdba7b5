"""What Santa, AppLocker and fapolicyd blocked, reported like a Linux block.

Recorded samples (tests/agent/data), written from each blocker's documented
format, with hostile ones among them; Windows' `wevtutil` is a fake command
runner over those samples, macOS's Santa log a real file in a fake root.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from agent.prevention.blocker import Blocked
from agent.responding.actions import ActionRunner
from agent.responding.notify import RecordingNotifier
from agent.scanning.native_watch import NativeBlockSensor
from agent.sensors.native_blocks import (
    MAX_FIELD_CHARS,
    parse_applocker_event,
    parse_fapolicyd_line,
    parse_santa_line,
    record_id,
    split_events,
)
from agent.sensors.native_log import (
    SANTA_LOG,
    AppLockerEvents,
    LogTail,
    native_sources,
    to_blocked,
)
from agent.uplink.events import blocked_exec_events
from policies.engine import Engine
from policies.wire import AgentEvent
from tests.agent.conftest import DEADLINE, engine_from_text

DATA = Path(__file__).parent / "data"
TELEGRAM_SHA = "5f2d6b1c0e3a4978b6c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d"
POLICY = ("name: t\nmode: {mode}\nrules:\n  - app: telegram\n    verdict: deny\n"
          "    action: {action}\n")


def engine(os_name: str, mode: str = "enforce", action: str = "block") -> Engine:
    return engine_from_text(POLICY.format(mode=mode, action=action), os_name)


def lines(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").splitlines(keepends=True)


# -- parsers ----------------------------------------------------------------------


def test_santa_deny_lines_become_blocks_and_nothing_else_does() -> None:
    blocks = [block for line in lines("santa.log") if (block := parse_santa_line(line))]
    first = blocks[0]
    assert (first.path, first.sha256, first.pid, first.user, first.enforced) == (
        "/Applications/Telegram.app/Contents/MacOS/Telegram", TELEGRAM_SHA, 1204, "bob", True)
    paths = [block.path for block in blocks]
    # A raw `|` or `=` in a path stays in it; args cannot smuggle a second path or hash.
    assert "/Users/eve/Downloads/a|b=c/Telegram.app/Contents/MacOS/Telegram" in paths
    assert "/Users/eve/Apps/odd|name/Telegram.app/Contents/MacOS/Telegram" in paths
    assert "/bin/ls" not in paths
    assert all(block.sha256 != TELEGRAM_SHA for block in blocks[1:])
    # ALLOW, DISKAPPEAR, truncated and empty-path lines are not blocks.
    assert len(blocks) == 5


def test_applocker_8004_is_a_block_and_8003_an_audit_would_block() -> None:
    events = split_events((DATA / "applocker_exe.xml").read_text(encoding="utf-8"))
    enforced, audit, allowed = (parse_applocker_event(event) for event in events)
    assert enforced is not None and audit is not None and allowed is None
    assert enforced.path == r"C:\Users\bob\AppData\Roaming\Telegram Desktop\Telegram.exe"
    assert (enforced.enforced, enforced.pid, enforced.record) == (True, 7788, "4102")
    assert enforced.user == "S-1-5-21-3623811015-3361044348-30300820-1013"
    # AppLocker's FileHash is an Authenticode hash: never passed off as the file's SHA-256.
    assert enforced.sha256 is None and "9C1B3F0E" in enforced.rule
    assert (audit.enforced, audit.path) == (False, r"C:\TOOLS\TELEGRAM\TELEGRAM.EXE")


def test_hostile_applocker_events_never_raise_and_entities_are_refused() -> None:
    events = split_events((DATA / "applocker_hostile.xml").read_text(encoding="utf-8"))
    parsed = [parse_applocker_event(event) for event in events]
    assert parsed[0] is None  # declares entities
    assert parsed[1] is not None and parsed[1].pid == 0  # absurd pid ignored, path kept
    assert len(events) == 2  # the truncated last event is no event
    for junk in ("", "<Event>", "<Event><System><EventID>8004</EventID></System></Event>",
                 "<Event>" + "<a>" * 5000 + "</Event>", "\x00<Event/>"):
        assert parse_applocker_event(junk) is None


def test_fapolicyd_execute_denials_keep_paths_with_spaces_and_separators() -> None:
    blocks = [block for line in lines("fapolicyd.log") if (block := parse_fapolicyd_line(line))]
    assert [(b.path, b.pid, b.parent) for b in blocks] == [
        ("/home/bob/Telegram/Telegram", 5678, "/usr/bin/bash"),
        ("/home/eve/my apps/a=b : c/Telegram", 5681, "/usr/bin/dash")]


def test_a_huge_path_is_cut_to_the_wire_limit() -> None:
    huge_path = "/x" * (MAX_FIELD_CHARS * 4)
    block = parse_santa_line(
        f"[t] I santad: action=EXEC|decision=DENY|reason=BINARY|path={huge_path}|args=")
    assert block is not None and len(block.path) == MAX_FIELD_CHARS


@pytest.mark.parametrize("parse", [parse_santa_line, parse_fapolicyd_line])
def test_huge_binary_and_junk_lines_are_no_blocks(parse: Callable[[str], object]) -> None:
    for junk in ("", "\x00\xff", "=" * 1000, "|" * 1000, "fapolicyd[1]: rule=x",
                 "[t] I santad: action=EXEC|decision=DENY|path=/a" + "|" * 100_000,
                 "fapolicyd[1]: rule=9 dec=deny perm=execute pid=1 : path=/a" + " x" * 50_000):
        assert parse(junk) is None


# -- mapping to the policy's app, and to the Linux blocker's event ------------------


def test_a_santa_block_maps_to_telegram_and_reads_like_a_linux_block() -> None:
    [line] = [line for line in lines("santa.log") if "pid=1204|" in line]
    block = parse_santa_line(line)
    assert block is not None
    blocked = to_blocked(block, engine("macos"))
    assert blocked is not None and blocked.finding.app == "telegram" and blocked.enforced
    runner = ActionRunner(RecordingNotifier(), lambda: {}, "macos")
    finding, results = runner.blocked(blocked)
    events = [AgentEvent.model_validate(event) for event, _, _ in
              blocked_exec_events(finding, results)]
    [action] = [event for event in events if event.type == "action"
                and event.result is not None and event.result.action == "block"]
    assert action.result is not None
    assert (action.result.ok, action.result.path, action.result.sha256, action.result.user) == (
        True, block.path, TELEGRAM_SHA, "bob")
    assert "denied by Santa" in action.result.detail
    assert events[0].type == "finding_opened"


def test_an_applocker_audit_event_is_a_would_block_even_when_warden_only_terminates() -> None:
    events = split_events((DATA / "applocker_exe.xml").read_text(encoding="utf-8"))
    audit = parse_applocker_event(events[1])
    assert audit is not None
    blocked = to_blocked(audit, engine("windows", action="terminate"))
    assert blocked is not None and blocked.finding.app == "telegram"
    _, results = ActionRunner(RecordingNotifier(), lambda: {}, "windows").blocked(blocked)
    [block] = [result for result in results if result["action"] == "block"]
    assert block["ok"] is False and "audit mode: would block" in block["detail"]


def test_a_block_of_an_app_the_policy_does_not_name_maps_to_nothing() -> None:
    block = parse_santa_line(next(line for line in lines("santa.log") if "some-other" in line))
    assert block is not None and to_blocked(block, engine("macos")) is None


# -- the sensor: positions, restarts, rotation, platforms ------------------------------


def santa_root(tmp_path: Path, text: str) -> Path:
    log = tmp_path / "root" / SANTA_LOG
    log.parent.mkdir(parents=True)
    log.write_text(text, encoding="utf-8")
    return tmp_path / "root"


def santa_sensor(root: Path, state: Path) -> NativeBlockSensor:
    mac = engine("macos")
    return NativeBlockSensor(native_sources("macos", root), state, lambda: mac)


def test_the_santa_log_is_tailed_and_a_restart_reports_nothing_twice(tmp_path: Path) -> None:
    text = (DATA / "santa.log").read_text(encoding="utf-8")
    root = santa_root(tmp_path, text)
    state = tmp_path / "native.json"
    sensor = santa_sensor(root, state)
    first = [blocked.path for blocked in sensor.poll()]
    assert "/Applications/Telegram.app/Contents/MacOS/Telegram" in first
    assert sensor.unmapped >= 1  # some-other-tool and the cut path
    assert santa_sensor(root, state).poll() == []  # a restart: nothing new
    # A line half written is left for the next poll, then reported once.
    [telegram] = [line for line in text.splitlines(keepends=True) if "pid=1204|" in line]
    log = root / SANTA_LOG
    with log.open("a", encoding="utf-8") as handle:
        handle.write(telegram[:60])
    assert santa_sensor(root, state).poll() == []
    with log.open("a", encoding="utf-8") as handle:
        handle.write(telegram[60:])
    assert [b.pid for b in santa_sensor(root, state).poll()] == [1204]
    # Rotated (a new file): read from its start.
    log.unlink()
    log.write_text(telegram, encoding="utf-8")
    assert [b.pid for b in santa_sensor(root, state).poll()] == [1204]
    assert set(json.loads(state.read_text())) == {"santa"}


def test_a_huge_log_line_is_skipped_without_holding_it(tmp_path: Path) -> None:
    [telegram] = [line for line in lines("santa.log") if "pid=1204|" in line]
    root = santa_root(tmp_path, "")
    state = tmp_path / "native.json"
    santa_sensor(root, state).poll()
    with (root / SANTA_LOG).open("a", encoding="utf-8") as handle:
        handle.write("x" * (3 * 1024 * 1024) + "\n" + telegram)
    found = []
    for _ in range(5):
        found += santa_sensor(root, state).poll()
    assert [b.pid for b in found] == [1204]


def test_a_broken_state_file_or_missing_log_warns_and_never_raises(tmp_path: Path) -> None:
    root = santa_root(tmp_path, "")
    (root / SANTA_LOG).unlink()
    state = tmp_path / "native.json"
    state.write_text("{not json")
    sensor = santa_sensor(root, state)
    assert sensor.poll() == []
    assert any("santa" in warning and "santa.log" in warning for warning in sensor.warnings)


class FakeWevtutil:
    """`wevtutil qe` over recorded events: honours the record-id filter, newest first."""

    def __init__(self, xml: str) -> None:
        self.events = split_events(xml)
        self.calls: list[list[str]] = []

    def __call__(self, args: Sequence[str]) -> str:
        self.calls.append(list(args))
        if "EXE and DLL" not in args[2]:
            return ""
        after = int(args[3].rsplit(">", 1)[1].rstrip("]"))
        count = int(args[5].removeprefix("/c:"))
        newer = sorted((e for e in self.events if record_id(e) > after), key=record_id,
                       reverse=True)
        return "\r\n".join(newer[:count])


def test_applocker_events_are_read_once_across_restarts(tmp_path: Path) -> None:
    fake = FakeWevtutil((DATA / "applocker_exe.xml").read_text(encoding="utf-8")
                        + (DATA / "applocker_hostile.xml").read_text(encoding="utf-8"))
    win = engine("windows")
    state = tmp_path / "native.json"
    found = NativeBlockSensor([AppLockerEvents(fake)], state, lambda: win).poll()
    # Oldest first; the hostile event's path still names Telegram.exe (its pid was absurd).
    assert [(b.pid, b.enforced) for b in found] == [(5120, False), (7788, True), (0, True)]
    assert fake.calls[0][:2] == ["wevtutil", "qe"] and "/f:xml" in fake.calls[0]
    assert NativeBlockSensor([AppLockerEvents(fake)], state, lambda: win).poll() == []
    assert "EventRecordID>5001" in fake.calls[-2][3]


def test_sources_only_run_where_their_blocker_is(tmp_path: Path) -> None:
    root = santa_root(tmp_path, "")
    assert [s.name for s in native_sources("macos", root)] == ["santa"]
    assert native_sources("linux", root) == []  # no fapolicyd
    assert native_sources("macos", tmp_path) == []  # no Santa
    (root / "etc/fapolicyd").mkdir(parents=True)
    (root / "var/log/messages").parent.mkdir(parents=True, exist_ok=True)
    (root / "var/log/messages").write_text("".join(lines("fapolicyd.log")))
    [tail] = native_sources("linux", root)
    assert isinstance(tail, LogTail) and tail.name == "fapolicyd"
    assert [b.pid for b in tail.read_new({})] == [5678, 5681]


def test_the_sensor_thread_hands_blocks_on_and_stops_when_told(tmp_path: Path) -> None:
    root = santa_root(tmp_path, "".join(lines("santa.log")))
    sensor = santa_sensor(root, tmp_path / "native.json")
    stop = threading.Event()
    seen: list[Blocked] = []

    def on_blocked(blocked: Blocked) -> None:
        seen.append(blocked)
        stop.set()  # the agent is stopped as soon as the first block is handed on

    thread = threading.Thread(target=sensor.run, args=(stop, on_blocked, 60.0))
    thread.start()
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert seen and seen[0].finding.app == "telegram" and seen[0].native.startswith("Santa")


def test_without_a_native_blocker_the_thread_ends_at_once(tmp_path: Path) -> None:
    sensor = NativeBlockSensor(native_sources("linux", tmp_path), tmp_path / "n.json",
                               lambda: engine("linux"))
    sensor.run(threading.Event(), lambda blocked: None)
    assert not (tmp_path / "n.json").exists()
