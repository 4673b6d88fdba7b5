"""Finding lifecycle: opened once, resolved when its cause goes away, per sensor."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from agent.daemon import to_server_event
from agent.scanning.findings import FindingTracker, format_time, identity_of
from agent.scanning.one_scan import ScanResult, scan_once
from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.processes import ProcessSensor
from policies.engine import Engine, Finding
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    ProcessObservation,
)

NOON = dt.datetime(2026, 5, 9, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _tracker() -> FindingTracker:
    return FindingTracker(clock=lambda: NOON)


def _process(engine: Engine, pid: int, name: str = "telegram-desktop") -> list[Finding]:
    return engine.evaluate(ProcessObservation(pid=pid, name=name, create_time=1000.0 + pid,
                                              exe=f"/opt/{name}"))


def _installed(engine: Engine, package: str = "telegram-desktop") -> list[Finding]:
    return engine.evaluate(InstalledObservation(source="deb", id=package))


def test_replace_opens_new_and_resolves_missing(default_engine: Engine) -> None:
    tracker = _tracker()
    first = _installed(default_engine)
    second = default_engine.evaluate(InstalledObservation(source="snap", id="telegram-desktop"))

    events = tracker.replace("installed", first)
    assert [(e["event"], e["key"]) for e in events] == [("opened", first[0].key)]
    assert tracker.replace("installed", first) == []  # still there: nothing new

    events = tracker.replace("installed", second)
    assert [(e["event"], e["key"]) for e in events] == [
        ("resolved", first[0].key), ("opened", second[0].key)]
    assert tracker.open_findings() == second


def test_event_shape(default_engine: Engine) -> None:
    (finding,) = _process(default_engine, 4242)
    (event,) = _tracker().update("process", [finding], [])
    assert event == {"event": "opened", "time": "2026-05-09T12:00:00.123Z", "pid": 4242,
                     **finding.as_dict()}
    assert event["evidence"]["exe"] == "/opt/telegram-desktop"
    assert event["alternative"] == "signal"


def test_installed_finding_has_no_pid(default_engine: Engine) -> None:
    (event,) = _tracker().replace("installed", _installed(default_engine))
    assert "pid" not in event
    assert event["evidence"]["package"] == "telegram-desktop"


def test_process_exit_resolves_only_that_process(default_engine: Engine) -> None:
    tracker = _tracker()
    one, two = _process(default_engine, 1)[0], _process(default_engine, 2)[0]
    tracker.update("process", [one, two], [])
    events = tracker.update("process", [], [identity_of(one.key)])
    assert [(e["event"], e["pid"]) for e in events] == [("resolved", 1)]
    assert tracker.open_pids() == {2}


def test_sensors_do_not_resolve_each_other(default_engine: Engine) -> None:
    tracker = _tracker()
    tracker.replace("installed", _installed(default_engine))
    tracker.replace("network", default_engine.evaluate(
        ConnectionObservation(remote_ip="149.154.167.51", remote_port=443, pid=7)))
    process = _process(default_engine, 7)
    tracker.update("process", process, [])

    # Every process went away, and a network pass saw nothing: installed stays open.
    tracker.replace("process", [])
    tracker.replace("network", [])
    assert [f.sensor for f in tracker.open_findings()] == ["installed"]


def test_replaced_identity_keeps_a_finding_it_still_has(default_engine: Engine) -> None:
    """A process re-read after exec: gone and new in one delta, same identity."""
    tracker = _tracker()
    (finding,) = _process(default_engine, 9)
    tracker.update("process", [finding], [])
    again = _process(default_engine, 9)
    assert tracker.update("process", again, [identity_of(finding.key)]) == []

    # Re-read again, now as something innocent: the finding resolves.
    innocent = _process(default_engine, 9, name="bash")
    assert innocent == []
    events = tracker.update("process", innocent, [identity_of(finding.key)])
    assert [e["event"] for e in events] == ["resolved"]


def test_gone_identity_without_findings_is_harmless(default_engine: Engine) -> None:
    tracker = _tracker()
    tracker.update("process", _process(default_engine, 3), [])
    assert tracker.update("process", [], ["pid:77:1.00", "pid:3:0.00"]) == []
    assert tracker.open_pids() == {3}


def test_format_time_is_utc_with_z() -> None:
    east = dt.timezone(dt.timedelta(hours=3))
    assert format_time(dt.datetime(2026, 1, 2, 15, 4, 5, tzinfo=east)) == "2026-01-02T12:04:05.000Z"


def test_scan_result_exit_signal(default_engine: Engine) -> None:
    denied = ScanResult(_installed(default_engine), [], default_engine.version)
    allowed = ScanResult(default_engine.evaluate(InstalledObservation(source="deb",
                         id="signal-desktop"), include_allowed=True), [], "v")
    assert denied.denied
    assert allowed.findings and not allowed.denied
    assert denied.as_dict()["findings"][0]["sensor"] == "installed"


POLICY = """
name: switch
apps:
  - id: sleeper
    name: Sleeper
    signatures:
      process:
        names: [warden-test-sleeper]
rules:
  - app: sleeper
    verdict: {verdict}
"""


def test_policy_switch_rejudges_running_processes(
    make_engine: Any, fakes: Any, wait: Any
) -> None:
    allow, deny = make_engine(POLICY.format(verdict="allow")), make_engine(
        POLICY.format(verdict="deny"))
    events: list[dict[str, Any]] = []
    watch = Watch(allow, Sensors(processes=ProcessSensor()), events.append,
                  timing=WatchTiming(process_interval=0.001))
    watch.start()
    process = fakes.start("warden-test-sleeper")
    wait(lambda: watch.step() or any(o.pid == process.pid
                                      for o in watch.sensors.processes.observations()))  # type: ignore[union-attr]
    assert events == []

    watch.set_engine(deny)
    assert [(e["event"], e["pid"], e["verdict"]) for e in events] == [
        ("opened", process.pid, "deny")]
    watch.set_engine(allow)
    assert [e["event"] for e in events] == ["opened", "resolved"]


ENFORCE = """
name: enforce
mode: enforce
rules:
  - app: telegram
    verdict: deny
    action: terminate
    message: Telegram is closed on this machine.
"""


def test_a_new_policy_restates_a_finding_still_open(
    default_engine: Engine, make_engine: Any, fakes: Any
) -> None:
    """A Telegram seen under the embedded default (audit, notify) is still running when the
    server's policy (enforce, terminate) replaces it: its finding opens again on the new
    terms, so the agent acts on them and the server shows them."""
    events: list[dict[str, Any]] = []
    process = fakes.start("telegram-desktop")
    watch = Watch(default_engine, Sensors(processes=ProcessSensor()), events.append)
    watch.start()
    assert [(e["event"], e["mode"], e["action"]) for e in events if e["pid"] == process.pid] \
        == [("opened", "audit", "notify")]
    assert not any(e.get("restated") for e in events)
    events.clear()

    enforce = make_engine(ENFORCE)
    watch.set_engine(enforce)
    assert [(e["event"], e["mode"], e["action"], e["message"]) for e in events
            if e["pid"] == process.pid] == [
        ("opened", "enforce", "terminate", "Telegram is closed on this machine.")]
    # Marked as a restatement, so the server does not count the user launching it again.
    [restated] = [e for e in events if e["pid"] == process.pid]
    assert restated["restated"] is True
    assert to_server_event(restated)["restated"] is True
    events.clear()
    watch.set_engine(enforce)  # the same terms again: nothing new to say
    assert [e for e in events if e["pid"] == process.pid] == []


def test_policy_submitted_from_another_thread_is_applied_by_the_loop(
    make_engine: Any, fakes: Any, wait: Any
) -> None:
    import threading

    allow, deny = make_engine(POLICY.format(verdict="allow")), make_engine(
        POLICY.format(verdict="deny"))
    events: list[dict[str, Any]] = []
    sensor = ProcessSensor()
    watch = Watch(allow, Sensors(processes=sensor), events.append,
                  timing=WatchTiming(process_interval=0.05))
    process = fakes.start("warden-test-sleeper")
    watch.start()  # the first full scan sees it, here, before the loop's thread runs
    assert process.pid in {o.pid for o in sensor.observations()}
    assert events == []
    thread = threading.Thread(target=watch.run_loop)
    thread.start()
    try:
        watch.submit_engine(deny)
        wait(lambda: events, what="the loop to re-judge under the new policy")
        assert [(e["event"], e["pid"]) for e in events] == [("opened", process.pid)]
        assert watch.engine is deny
    finally:
        watch.stop()
        thread.join(timeout=10)
        watch.close()
    assert not thread.is_alive()


def test_watch_stop_ends_the_loop_from_another_thread(default_engine: Engine) -> None:
    import threading

    watch = Watch(default_engine, Sensors(processes=ProcessSensor()), lambda event: None,
                  timing=WatchTiming(process_interval=0.05))
    thread = threading.Thread(target=watch.run)
    thread.start()
    watch.stop()
    thread.join(timeout=10)
    assert not thread.is_alive()


def test_scan_once_with_no_sensors_is_empty(default_engine: Engine) -> None:
    result = scan_once(default_engine, Sensors())
    assert result.as_dict() == {"findings": [], "warnings": [],
                                "policy_version": default_engine.version, "sensors": {}}


@pytest.mark.parametrize(("sensor", "count"), [("process", 1), ("installed", 1), ("network", 0)])
def test_open_findings_filter_by_sensor(default_engine: Engine, sensor: str, count: int) -> None:
    tracker = _tracker()
    tracker.replace("installed", _installed(default_engine))
    tracker.update("process", _process(default_engine, 5), [])
    found = tracker.open_findings(sensor)  # type: ignore[arg-type]
    assert [f.sensor for f in found] == [sensor] * count
    assert len(tracker.open_findings()) == 2


def test_a_process_seen_running_another_exe_is_restated(default_engine: Engine) -> None:
    """A read torn by an exec opened the finding with the launcher's exe; the re-read
    while young sees the real one, and the server gets the evidence as it is now."""
    tracker = FindingTracker()
    torn = ProcessObservation(pid=77, name="telegram-desktop", create_time=5.0,
                              exe="/usr/bin/dash")
    real = ProcessObservation(pid=77, name="telegram-desktop", create_time=5.0,
                              exe="/opt/Telegram/telegram-desktop")
    [first] = default_engine.evaluate(torn)
    [second] = default_engine.evaluate(real)
    assert first.key == second.key
    opened = tracker.update("process", [first], [])
    restated = tracker.update("process", [second], [])
    assert [e["event"] for e in opened + restated] == ["opened", "opened"]
    assert restated[0]["evidence"]["exe"] == "/opt/Telegram/telegram-desktop"
    assert tracker.update("process", [second], []) == []  # the same again: nothing to say
