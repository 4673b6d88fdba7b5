"""Start-up races: a banned app started at any moment around an agent's start is reported.

A soak. Many fresh agents (a new state dir each: first start, enrollment, the
embedded default policy, then the server's signed one) each get a train of
fake Telegrams started at varied moments: before the agent starts, while it
imports, during its first scan, during enrollment, as the server's policy
replaces the default, and after. The server's policy differs from the default
(another message, and WhatsApp banned too) so the swap really re-judges what
runs: a fake WhatsApp seen under the default is allowed until the swap, and
must be reported after it. Some agents tick slowly, so processes that started
since the last tick are read in the very step that applies the new policy,
and some tick fast: a read of a process that spans its exec (name from the
launcher, exe from Telegram) is then likely, and must not hide it.
Some fakes start through a launcher (`sh -c 'exec telegram-desktop'`), so
the agent also meets them before their exec.

Every fake must be an open finding in the server API within DEADLINE of its
start, and resolved within DEADLINE of its exit. The latency distribution is
printed. WARDEN_STARTUP_SOAK=<n> runs n agents (CI runs a few).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from agent.host.machine import KEY_FILE, MachineKey
from agent.state import StateDir
from policies.private_files import write_private
from tests.agent.conftest import FakeProcesses, wait_for
from tests.e2e.conftest import AgentProcess, WardenServer, agent_factory
from tests.e2e.test_agent_service import ENFORCE, _push_and_activate, finding_for

pytestmark = pytest.mark.slow

AGENTS = int(os.environ.get("WARDEN_STARTUP_SOAK", "8"))
# The soak's agents run one after another in halves, each half a test of its own, so two
# pytest-xdist workers share them; every half runs every tick of TICKS.
HALVES = 2
DEADLINE = 15.0
# The train of fakes runs from the agent's spawn until this long after it applied
# the server's policy (or, should it never, MAX_TRAIN after the spawn).
AFTER_SWAP = 1.0
MAX_TRAIN = 10.0
# Process tick of each agent in turn: the default; slower ones, whose ticks are
# likely to see a new process and the policy swap in the same step; a fast one.
TICKS = (None, "1.5", "0.01", "2.5")

SERVER_POLICY = """
name: startup-race
mode: audit
rules:
  - app: telegram
    verdict: deny
    action: notify
    alternative: signal
    message: Telegram is banned here (the server's policy).
  - app: whatsapp
    verdict: deny
    action: notify
  - app: signal
    verdict: allow
"""

FAKE_NAMES = {"telegram": "telegram-desktop", "whatsapp": "WhatsApp"}


@dataclass
class Fake:
    app: str
    process: subprocess.Popen[bytes]
    started: float  # wall clock, as the agent's and the server's times are
    launcher: bool = False
    moment: str = ""
    opened: float | None = None  # when the test first saw it open in the API
    first_seen: float | None = None  # the agent's time of the opening event
    stopped: float | None = None
    resolved: float | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def ended_early(self) -> bool:
        """It exited before the test stopped it: something else on this machine killed it
        (another test's agent in enforce mode, say). Not a miss of this agent."""
        return self.stopped is None and self.process.poll() is not None


@dataclass
class Milestones:
    """Wall-clock moments of one agent's start, from its log (None: not reached)."""

    spawned: float
    enrolled: float | None = None
    applied: float | None = None

    def moment(self, started: float) -> str:
        if started < self.spawned:
            return "before the agent"
        if self.enrolled is None or started < self.enrolled:
            return "spawned, not enrolled"
        if self.applied is None or started < self.applied:
            return "enrolled, default policy"
        if started < self.applied + 0.3:
            return "right after the swap"
        return "later"


def _log_time(line: str) -> float | None:
    """The wall-clock time of an agent log line ("2026-01-02 03:04:05,678 INFO ...")."""
    try:
        stamp = dt.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    except ValueError:
        return None
    return stamp.timestamp()  # asctime is local time, as is a naive datetime


def read_milestones(agent: AgentProcess, milestones: Milestones) -> None:
    if not agent.log.exists():
        return
    for line in agent.log.read_text(errors="replace").splitlines():
        if "enrolled as agent" in line and milestones.enrolled is None:
            milestones.enrolled = _log_time(line)
        elif "applied policy" in line and milestones.applied is None:
            milestones.applied = _log_time(line)


class FindingsWatch:
    """Polls the findings API on a thread; notes when each fake is first open, then resolved.

    A thread because the test's own thread is busy starting fakes on a schedule.
    """

    def __init__(self, server: WardenServer, since: dt.datetime) -> None:
        self.server = server
        self.since = since.isoformat()
        self.fakes: dict[tuple[str, int], Fake] = {}
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="findings-watch", daemon=True)
        self._thread.start()

    def add(self, fake: Fake) -> None:
        with self._lock:
            self.fakes[fake.app, fake.pid] = fake

    def pending(self, stage: str) -> list[Fake]:
        with self._lock:
            return [f for f in self.fakes.values() if getattr(f, stage) is None]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.05):
                self._poll()
        except BaseException as exc:  # handed to the test's thread by close()
            self.error = exc

    def _poll(self) -> None:
        try:
            items = self.server.findings(sensor="process", since=self.since)
        except requests.ConnectionError:
            return
        now = time.time()
        with self._lock:
            for item in items:
                fake = self.fakes.get((item["app"], item["evidence"].get("pid")))
                if fake is None or item["verdict"] != "deny":
                    continue
                if fake.opened is None and item["status"] == "open":
                    fake.opened = now
                    fake.first_seen = dt.datetime.fromisoformat(item["first_seen"]).replace(
                        tzinfo=dt.UTC).timestamp()
                if item["status"] == "resolved" and fake.resolved is None:
                    fake.resolved = now


@pytest.fixture(scope="module")
def race_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WardenServer]:
    """One server for every agent of the soak, serving a policy that differs from the default."""
    data = tmp_path_factory.mktemp("race-server")
    warden = WardenServer(data / "server", data / "server.log")
    warden.start()
    try:
        _push_and_activate(warden, SERVER_POLICY)
        yield warden
    finally:
        warden.stop()


@pytest.fixture(scope="module")
def machine_key_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one machine key of every agent enrolled with race_server: both halves may run
    on one pytest worker, against one server, and a second key for this machine's id
    would wait for an administrator's approval."""
    directory = tmp_path_factory.mktemp("race-machine")
    MachineKey.load_or_create(StateDir(directory))
    return directory


def _start(fakes: FakeProcesses, watch: FindingsWatch, app: str, launcher: bool = False
           ) -> Fake:
    if launcher:
        # The pid is a shell first, then (exec) the fake: read before, during, after.
        path = fakes.binary(FAKE_NAMES[app])
        process = subprocess.Popen(["/bin/sh", "-c", 'exec "$0" 300', str(path)])
        fakes.running.append(process)
    else:
        process = fakes.start(FAKE_NAMES[app])
    fake = Fake(app, process, time.time(), launcher)
    watch.add(fake)
    return fake


def _train(agent: AgentProcess, fakes: FakeProcesses, watch: FindingsWatch,
           rng: random.Random) -> list[Fake]:
    """Start the agent amid fakes: one of each app before it, then a train until after the swap."""
    started = [_start(fakes, watch, "telegram"), _start(fakes, watch, "whatsapp")]
    milestones = Milestones(spawned=time.time())
    agent.start()
    burst = False
    while time.time() - milestones.spawned < MAX_TRAIN:
        read_milestones(agent, milestones)
        if milestones.applied and time.time() > milestones.applied + AFTER_SWAP:
            break
        if milestones.enrolled and not burst:
            # The policy fetch follows enrollment within milliseconds: a burst now
            # lands around the swap.
            started += [_start(fakes, watch, "telegram") for _ in range(3)]
            burst = True
            continue
        started.append(_start(fakes, watch, "whatsapp" if rng.random() < 0.3 else "telegram",
                              launcher=rng.random() < 0.5))
        time.sleep(rng.uniform(0.0, 0.12))  # spacing of the train, not a wait
    read_milestones(agent, milestones)
    for fake in started:
        fake.moment = milestones.moment(fake.started)
    return started


def _same_machine_key(machine: Path, agent: AgentProcess) -> None:
    """Every agent here runs on this one machine (one /etc/machine-id): each is a fresh
    install that kept the machine's key, so it re-enrolls by proving it; a new key would
    wait for an administrator's approval (agent.host.machine)."""
    shared = MachineKey.load_or_create(StateDir(machine))
    state = StateDir(agent.state_dir)
    write_private(state.path / KEY_FILE, (machine / KEY_FILE).read_bytes())
    assert MachineKey.load_or_create(state).public_key == shared.public_key


def run_one_agent(server: WardenServer, machine: Path, tmp_path: Path, number: int,
                  rng: random.Random) -> tuple[list[Fake], list[str]]:
    """A fresh agent amid a train of fakes: every fake opened, then resolved once it exits."""
    directory = tmp_path / f"agent{number}"
    (directory / "fakes").mkdir(parents=True)
    fakes = FakeProcesses(directory / "fakes")
    watch = FindingsWatch(server, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    tick = TICKS[number % len(TICKS)]
    misses: list[str] = []
    try:
        with agent_factory(directory, server) as make:
            agent: AgentProcess = make(**({"process_interval": tick} if tick else {}))
            _same_machine_key(machine, agent)
            started = _train(agent, fakes, watch, rng)
            misses += _wait_stage(watch, "opened", lambda fake: fake.started)
            alive = [fake for fake in started if not fake.ended_early]
            for fake in alive:
                fakes.stop(fake.process)
            stopped = time.time()
            for fake in alive:
                fake.stopped = stopped
            misses += _wait_stage(watch, "resolved", lambda fake: stopped)
            code = agent.stop()
            if code != 0:
                misses.append(f"exited with {code}")
            if misses:
                misses = [f"agent {number} (tick {tick or 'default'}): {miss}"
                          for miss in misses]
                misses.append(f"agent {number} log:\n{agent.log.read_text()[-3000:]}")
    finally:
        fakes.close()
        watch.close()
    return started, misses


def _wait_stage(watch: FindingsWatch, stage: str, since: Callable[[Fake], float]
                ) -> list[str]:
    """Until every fake reached `stage` or DEADLINE passed since `since`; the misses."""
    def waiting() -> list[Fake]:
        # A fake never opened is already a miss; it is not waited for again.
        return [f for f in watch.pending(stage) if not f.ended_early
                and (stage == "opened" or f.opened is not None)]

    def settled() -> bool:
        return all(time.time() > since(fake) + DEADLINE for fake in waiting())

    wait_for(lambda: not waiting() or settled(), 3 * DEADLINE, f"every fake {stage}")
    return [f"{f.app} pid {f.pid}{' (via a launcher)' if f.launcher else ''} started at "
            f"{f.started:.3f} ({f.moment}) not {stage} within {DEADLINE} s; "
            f"it is {_proc_state(f.pid)}" for f in waiting()]


def _proc_state(pid: int) -> str:
    """What /proc says of a pid now, for a miss's message."""
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
    return f"running as {comm!r} ({exe})"


def _summary(fakes: list[Fake]) -> str:
    def row(label: str, values: list[float]) -> str:
        if not values:
            return f"  {label:<28} n=0"
        values = sorted(values)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        return (f"  {label:<28} n={len(values):<4} min={values[0]:.2f} "
                f"p50={statistics.median(values):.2f} p90={p90:.2f} max={values[-1]:.2f}")

    lines = ["start-up race soak: seconds from a fake's start to its open finding in the API"]
    for moment in ("before the agent", "spawned, not enrolled", "enrolled, default policy",
                   "right after the swap", "later"):
        lines.append(row(moment, [f.opened - f.started for f in fakes
                                  if f.moment == moment and f.opened is not None]))
    lines.append(row("all (API)", [f.opened - f.started for f in fakes if f.opened]))
    lines.append(row("all (agent's event time)", [f.first_seen - f.started for f in fakes
                                                  if f.first_seen is not None]))
    lines.append(row("resolved after exit", [f.resolved - f.stopped for f in fakes
                                             if f.resolved and f.stopped]))
    return "\n".join(lines)


@pytest.mark.timeout(60 + 30 * AGENTS)
@pytest.mark.parametrize("half", range(HALVES))
def test_a_banned_app_started_at_any_moment_of_an_agents_start_is_reported(
    race_server: WardenServer, machine_key_dir: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], half: int
) -> None:
    seed = int(os.environ.get("WARDEN_STARTUP_SOAK_SEED", str(time.time_ns())))
    rng = random.Random(seed)
    fakes: list[Fake] = []
    misses: list[str] = []
    began = time.monotonic()
    per_half = -(-AGENTS // HALVES)
    numbers = range(half * per_half, min(AGENTS, (half + 1) * per_half))
    if not numbers:
        pytest.skip(f"WARDEN_STARTUP_SOAK={AGENTS} leaves this half no agent")
    for number in numbers:
        started, missed = run_one_agent(race_server, machine_key_dir, tmp_path, number, rng)
        fakes += started
        misses += missed
    with capsys.disabled():
        print(f"\n{_summary(fakes)}\n  {len(numbers)} agents, {len(fakes)} fakes, "
              f"{time.monotonic() - began:.0f} s, seed {seed} (WARDEN_STARTUP_SOAK_SEED)")
        if early := [fake for fake in fakes if fake.ended_early]:
            print(f"  not counted: {len(early)} fakes killed by something else on this "
                  f"machine ({sorted({f.process.returncode for f in early})})")
    assert len([fake for fake in fakes if not fake.ended_early]) >= 5 * len(numbers)
    assert {fake.app for fake in fakes} == {"telegram", "whatsapp"}
    assert not misses, "\n".join(misses)


def test_a_telegram_seen_under_the_default_is_ended_once_the_servers_enforce_policy_arrives(
    server: WardenServer, make_agent: Any, fake: FakeProcesses
) -> None:
    """The embedded default only notifies; the server's policy terminates. A Telegram the
    first scan judged under the default is still running at the swap: the agent must act
    on the new terms, not keep the old ones for as long as that Telegram runs."""
    _push_and_activate(server, ENFORCE.format(mode="enforce"))
    telegram = fake.start("telegram-desktop")
    agent: AgentProcess = make_agent()
    agent.start()
    telegram.wait(timeout=3 * DEADLINE)
    finding = wait_for(lambda: finding_for(server, telegram.pid, status="resolved"),
                       3 * DEADLINE, "the finding resolved")
    assert (finding["action"], finding["message"]) == (
        "terminate", "Telegram is not allowed here.")

    def outcomes() -> list[dict[str, Any]]:
        return [{"action": event["payload"]["result"]["action"],
                 "ok": event["payload"]["result"]["ok"]}
                for event in server.api(f"findings/{finding['id']}")["events"]
                if event["type"] == "action"]

    # The actions thread records the kill's result; the scanner may see the process gone
    # and report the finding resolved first (the server takes events in any order).
    wait_for(lambda: {"action": "terminate", "ok": True} in outcomes(), 3 * DEADLINE,
             "the terminate recorded")
