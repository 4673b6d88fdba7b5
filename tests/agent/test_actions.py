"""Findings become actions: the user is told about Signal; enforce mode ends Telegram, audit never.

A real fake-Telegram process, the real stock catalog and policies compiled the
way the server compiles them.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.responding.actions import ActionRunner
from agent.responding.enforce import TerminateResult, terminate_tree
from agent.responding.notify import RecordingNotifier
from policies.compiler import compile_bundle
from policies.engine import Engine, Finding
from policies.loader import default_policy_path, load_catalog, load_policy, parse_policy
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    ProcessObservation,
)

SIGNAL_LINK = "https://signal.org/download/"
DEADLINE = 10.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="spawns a copied /bin/sleep")


def policy_bundle(mode: str, action: str) -> dict[str, Any]:
    catalog = load_catalog()
    text = (f"name: test-{mode}\nmode: {mode}\nrules:\n"
            f"  - app: telegram\n    verdict: deny\n    action: {action}\n"
            "    alternative: signal\n    message: Telegram is not allowed here.\n"
            "  - app: signal\n    verdict: allow\n")
    return compile_bundle(parse_policy(text, f"{mode}.yaml", catalog), catalog)


@pytest.fixture
def fake_telegram(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    exe = tmp_path / "telegram-desktop"
    shutil.copy("/bin/sleep", exe)
    process = subprocess.Popen([str(exe), "300"], text=True)
    yield process
    if process.poll() is None:
        process.kill()
    process.wait()


def finding_for(bundle: dict[str, Any], process: subprocess.Popen[str]) -> Finding:
    """What the process sensor would report: the process as psutil sees it."""
    seen = psutil.Process(process.pid)
    observation = ProcessObservation(pid=seen.pid, name=seen.name(), exe=seen.exe(),
                                     create_time=seen.create_time(), username=seen.username(),
                                     cmdline=tuple(seen.cmdline()))
    [finding] = Engine(bundle).evaluate(observation)
    assert finding.app == "telegram" and finding.sensor == "process"
    return finding


def runner_for(bundle: dict[str, Any], notifier: RecordingNotifier) -> ActionRunner:
    return ActionRunner(notifier, lambda: bundle, "linux",
                        terminate=functools.partial(terminate_tree, grace_seconds=5.0))


def test_enforce_mode_tells_the_user_then_ends_telegram(
    fake_telegram: subprocess.Popen[str],
) -> None:
    bundle = policy_bundle("enforce", "terminate")
    notifier = RecordingNotifier()
    finding = finding_for(bundle, fake_telegram)
    notify, terminate = runner_for(bundle, notifier).handle(finding)
    assert notify == {"action": "notify", "ok": True, "detail": "recorded", "suppressed": False,
                      "app": "telegram", "key": finding.key, "mode": "enforce",
                      "sensor": "process"}
    assert terminate["action"] == "terminate" and terminate["ok"] is True, terminate
    assert terminate["pid"] == fake_telegram.pid
    assert terminate["killed_pids"] == [fake_telegram.pid]
    assert fake_telegram.wait(timeout=DEADLINE) == -15
    [notice] = notifier.notices
    assert (notice.alternative_id, notice.alternative_name, notice.alternative_link) == (
        "signal", "Signal", SIGNAL_LINK)
    assert f"Use Signal instead: {SIGNAL_LINK}" in notice.body
    assert notice.title == "Telegram is not allowed on this device"


def test_audit_mode_never_terminates_but_records_what_enforce_would_do(
    fake_telegram: subprocess.Popen[str],
) -> None:
    bundle = policy_bundle("audit", "terminate")
    notifier = RecordingNotifier()
    events = runner_for(bundle, notifier).handle(finding_for(bundle, fake_telegram))
    assert [(e["action"], e["ok"], e["detail"]) for e in events] == [
        ("notify", True, "recorded"), ("terminate", False, "audit mode: not terminated")]
    # Still running a moment later: nothing was sent its way.
    with pytest.raises(subprocess.TimeoutExpired):
        fake_telegram.wait(timeout=0.5)
    assert psutil.Process(fake_telegram.pid).status() != psutil.STATUS_ZOMBIE
    assert notifier.notices[0].alternative_link == SIGNAL_LINK


def test_the_stock_policy_notifies_about_signal_and_leaves_the_process(
    fake_telegram: subprocess.Popen[str],
) -> None:
    catalog = load_catalog()
    bundle = compile_bundle(load_policy(default_policy_path(), catalog), catalog)
    notifier = RecordingNotifier()
    events = runner_for(bundle, notifier).handle(finding_for(bundle, fake_telegram))
    assert [e["action"] for e in events] == ["notify"]
    assert fake_telegram.poll() is None
    [notice] = notifier.notices
    assert notice.alternative_name == "Signal" and notice.alternative_link == SIGNAL_LINK
    assert bundle["apps"]["signal"]["install_hints"]["linux"] in notice.body


class RecordingTerminate:
    def __init__(self) -> None:
        self.calls: list[tuple[int, float | None]] = []

    def __call__(self, pid: int, create_time: float | None) -> TerminateResult:
        self.calls.append((pid, create_time))
        return TerminateResult(True, "terminated", (pid,))


def synthetic_finding(bundle: dict[str, Any], **evidence: Any) -> Finding:
    observation = ProcessObservation(pid=evidence.get("pid", 999_999), name="telegram-desktop",
                                     create_time=evidence.get("create_time", 0.0))
    [finding] = Engine(bundle).evaluate(observation)
    return finding


def test_report_rules_and_allowed_apps_do_nothing() -> None:
    terminate = RecordingTerminate()
    report = policy_bundle("enforce", "report")
    notifier = RecordingNotifier()
    runner = ActionRunner(notifier, lambda: report, "linux", terminate)
    assert runner.handle(synthetic_finding(report, create_time=5.0)) == []
    enforce = policy_bundle("enforce", "terminate")
    [allowed] = Engine(enforce).evaluate(ProcessObservation(pid=5, name="signal-desktop",
                                                            create_time=5.0),
                                         include_allowed=True)
    assert allowed.verdict == "allow"
    assert ActionRunner(notifier, lambda: enforce, "linux", terminate).handle(allowed) == []
    assert notifier.notices == [] and terminate.calls == []


def test_a_connection_named_only_by_dns_is_reported_but_never_acted_on() -> None:
    bundle = policy_bundle("enforce", "terminate")
    notifier = RecordingNotifier()
    runner = ActionRunner(notifier, lambda: bundle, "linux", RecordingTerminate(),
                          cooldown_seconds=0)
    # 149.154.167.51 is in Telegram's own network: a CIDR match (high) acts.
    [by_cidr] = Engine(bundle).evaluate(ConnectionObservation(
        remote_ip="149.154.167.51", remote_port=443, remote_host="telegram.org",
        host_from_dns=True))
    assert by_cidr.confidence == "high" and not by_cidr.named_by_dns
    assert [event["action"] for event in runner.handle(by_cidr)] == ["notify"]
    # An address DNS gave for telegram.org, outside Telegram's networks: medium, told nobody.
    [by_dns] = Engine(bundle).evaluate(ConnectionObservation(
        remote_ip="203.0.113.7", remote_port=443, remote_host="telegram.org",
        host_from_dns=True))
    assert by_dns.confidence == "medium" and by_dns.named_by_dns
    assert runner.handle(by_dns) == []
    assert len(notifier.notices) == 1  # the CIDR match's only


def test_only_processes_with_a_known_start_time_are_terminated() -> None:
    bundle = policy_bundle("enforce", "terminate")
    terminate = RecordingTerminate()
    runner = ActionRunner(RecordingNotifier(), lambda: bundle, "linux", terminate,
                          cooldown_seconds=0)
    events = runner.handle(synthetic_finding(bundle, pid=4321, create_time=0.0))
    assert events[1]["ok"] is False and "no start time recorded" in events[1]["detail"]
    installed = Engine(bundle).evaluate(InstalledObservation(source="deb", id="telegram-desktop"))
    assert [e["action"] for e in runner.handle(installed[0])] == ["notify"]
    assert terminate.calls == []
    runner.handle(synthetic_finding(bundle, pid=4321, create_time=12.5))
    assert terminate.calls == [(4321, 12.5)]


def test_the_user_is_told_once_per_cooldown_but_every_action_is_recorded() -> None:
    bundle = policy_bundle("enforce", "terminate")
    notifier, terminate, now = RecordingNotifier(), RecordingTerminate(), [0.0]
    runner = ActionRunner(notifier, lambda: bundle, "linux", terminate,
                          cooldown_seconds=3600, clock=lambda: now[0])
    first = runner.handle(synthetic_finding(bundle, pid=10, create_time=1.0))
    now[0] = 60.0
    second = runner.handle(synthetic_finding(bundle, pid=11, create_time=2.0))
    assert first[0]["suppressed"] is False and second[0]["suppressed"] is True
    assert len(notifier.notices) == 1
    assert terminate.calls == [(10, 1.0), (11, 2.0)]


def test_the_notice_uses_the_bundle_in_force_when_the_finding_is_handled() -> None:
    bundle = policy_bundle("enforce", "notify")
    current = [bundle]
    notifier = RecordingNotifier()
    runner = ActionRunner(notifier, lambda: current[0], "linux", RecordingTerminate(),
                          cooldown_seconds=0)
    finding = synthetic_finding(bundle, create_time=3.0)
    runner.handle(finding)
    signal = {**bundle["apps"]["signal"], "download_url": "https://signal.example/get"}
    current[0] = {**bundle, "apps": {**bundle["apps"], "signal": signal}}
    runner.handle(finding)
    assert [n.alternative_link for n in notifier.notices] == [
        SIGNAL_LINK, "https://signal.example/get"]
