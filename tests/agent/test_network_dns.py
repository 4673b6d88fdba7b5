"""DNS correlation: the look-up worker, and a real connection named after a catalog domain.

No internet here, so the resolver is injected: it answers a WhatsApp domain with
a loopback address where a real listener waits, and a real client process
connects to it. The product never takes loopback answers (a DNS sinkhole gives
127.0.0.1 for blocked names); these tests admit one loopback range through
DnsWatch's `admit`, and one test shows the product's default refusing it.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agent.scanning.one_scan import scan_once
from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import Sensors, WatchTiming
from agent.sensors.dns import DnsWatch
from agent.sensors.dns_table import IPAddress
from agent.sensors.network import NetworkSensor
from agent.sensors.processes import ProcessSensor
from policies.engine import Engine

LAB = ipaddress.ip_network("127.77.0.0/16")
# A loopback address nothing else on this machine talks to: one per pytest-xdist worker.
# Workers share the network but not the process table (tests/conftest.py), so another
# worker's client connected to the same address would be a connection without an owner here.
LAB_ADDRESS = f"127.77.{int(os.environ.get('PYTEST_XDIST_WORKER', 'gw0')[2:] or 0)}.1"
DEADLINE = 10.0

POLICY = """
name: no-whatsapp
rules:
  - app: whatsapp
    verdict: deny
    action: notify
  - app: telegram
    verdict: deny
    action: notify
"""

# Connects, says so, and holds the connection until its stdin closes.
CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
print("connected", flush=True)
sys.stdin.read()
"""


def in_lab(address: IPAddress) -> bool:
    return address in LAB


class Resolver:
    """Answers from a dict; counts look-ups; can be held until released, or broken."""

    def __init__(self, answers: dict[str, list[str]], *, hold: bool = False,
                 error: Exception | None = None) -> None:
        self.answers = answers
        self.error = error
        self.asked: list[str] = []
        self.released = threading.Event()
        if not hold:
            self.released.set()

    def __call__(self, domain: str) -> Iterable[str]:
        self.asked.append(domain)
        self.released.wait()
        if self.error is not None:
            raise self.error
        return self.answers.get(domain, [])


@pytest.fixture
def resolvers() -> Iterator[Callable[..., Resolver]]:
    made: list[Resolver] = []

    def make(answers: dict[str, list[str]], **kwargs: Any) -> Resolver:
        made.append(Resolver(answers, **kwargs))
        return made[-1]

    yield make
    for resolver in made:
        resolver.released.set()  # let held workers finish


@pytest.fixture
def lab_listener() -> Iterator[socket.socket]:
    try:
        server = socket.create_server((LAB_ADDRESS, 0))
    except OSError as exc:  # macOS configures only 127.0.0.1
        pytest.skip(f"cannot listen on {LAB_ADDRESS}: {exc}")
    with server:
        server.settimeout(DEADLINE)
        yield server


@contextmanager
def client_process(server: socket.socket) -> Iterator[subprocess.Popen[str]]:
    """A real process holding a TCP connection to `server` until the block ends."""
    host, port = server.getsockname()
    client = subprocess.Popen([sys.executable, "-c", CLIENT, host, str(port)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout is not None and client.stdout.readline() == "connected\n"
        accepted, _ = server.accept()
        with accepted:
            yield client
    finally:
        if client.stdin is not None:
            client.stdin.close()
        client.wait(timeout=DEADLINE)
        if client.stdout is not None:
            client.stdout.close()


# -- the look-up worker ---------------------------------------------------------

WHATSAPP = {"whatsapp.com": "whatsapp"}


class Clocked:
    """A DnsWatch asking for whatsapp.com, on a clock the test moves."""

    def __init__(self, resolver: Resolver, **settings: Any) -> None:
        self.now = 0.0
        self.resolver = resolver
        self.dns = DnsWatch(resolver, clock=lambda: self.now, **settings)

    def update(self, at: float | None = None) -> dict[str, str]:
        """The table at `at` (or now), without waiting for answers."""
        if at is not None:
            self.now = at
        return self.dns.update(WHATSAPP)

    def settle(self, at: float | None = None) -> dict[str, str]:
        """The table at `at` once the look-ups due then have been answered."""
        self.update(at)
        self.dns.wait(DEADLINE)
        return self.update()


@pytest.fixture
def clocked(resolvers: Callable[..., Resolver]) -> Iterator[Callable[..., Clocked]]:
    made: list[Clocked] = []

    def make(answers: dict[str, list[str]], hold: bool = False, **settings: Any) -> Clocked:
        made.append(Clocked(resolvers(answers, hold=hold), refresh_interval=900.0, **settings))
        return made[-1]

    yield make
    for each in made:
        each.dns.close()


def test_answers_arrive_without_the_caller_waiting_and_refresh_on_schedule(
    clocked: Callable[..., Clocked],
) -> None:
    lab = clocked({"whatsapp.com": ["157.240.1.53"]})
    assert lab.update() == {}  # asked; the answer comes later
    assert lab.settle() == {"157.240.1.53": "whatsapp.com"}
    assert lab.resolver.asked == ["whatsapp.com"]
    lab.update(at=899.0)
    assert lab.resolver.asked == ["whatsapp.com"]  # not due yet
    lab.resolver.answers["whatsapp.com"] = ["157.240.1.54"]
    # Round-robin answers rotate: the earlier address is kept a while too.
    assert lab.settle(at=900.0) == {"157.240.1.53": "whatsapp.com",
                                    "157.240.1.54": "whatsapp.com"}
    assert lab.resolver.asked == ["whatsapp.com", "whatsapp.com"]
    assert lab.dns.warnings == []


def test_a_failed_look_up_keeps_earlier_answers_and_is_retried_sooner(
    clocked: Callable[..., Clocked],
) -> None:
    lab = clocked({"whatsapp.com": ["157.240.1.53"]})
    lab.settle()
    lab.resolver.error = RuntimeError("resolver broke")  # any exception, not only OSError
    assert lab.settle(at=900.0) == {"157.240.1.53": "whatsapp.com"}
    assert lab.dns.warnings == ["DNS look-up of whatsapp.com failed (resolver broke); "
                                "retrying every 60 s"]
    lab.update(at=959.0)
    assert len(lab.resolver.asked) == 2
    lab.resolver.error = None
    lab.settle(at=960.0)
    assert len(lab.resolver.asked) == 3
    assert lab.dns.warnings == []


def test_an_unanswered_look_up_is_reported_and_not_asked_again(
    clocked: Callable[..., Clocked],
) -> None:
    lab = clocked({"whatsapp.com": ["157.240.1.53"]}, hold=True, timeout=5.0)
    lab.update()
    assert lab.update(at=5.5) == {}
    assert "unanswered after 5 s" in lab.dns.warnings[0]
    lab.update(at=5000.0)  # long past due: still in flight, so not queued a second time
    assert lab.resolver.asked == ["whatsapp.com"]
    lab.resolver.released.set()
    assert lab.settle() == {"157.240.1.53": "whatsapp.com"}
    assert lab.dns.warnings == []


def test_addresses_age_out_when_no_answer_repeats_them(clocked: Callable[..., Clocked]) -> None:
    lab = clocked({"whatsapp.com": ["157.240.1.53"]}, retain=100.0)
    table = lab.settle()
    assert lab.update(at=100.0) is table  # nothing came in or aged out: not rebuilt
    assert table == {"157.240.1.53": "whatsapp.com"}
    assert lab.update(at=100.5) == {}


def test_a_policy_without_the_domain_forgets_its_addresses(
    clocked: Callable[..., Clocked],
) -> None:
    lab = clocked({"whatsapp.com": ["157.240.1.53"]})
    assert lab.settle()
    assert lab.dns.update({}) == {}


# -- end to end: a real connection, the real sensor and scanner ------------------


def test_watch_reports_a_connection_to_an_address_dns_gave_for_a_banned_app(
    make_engine: Any, wait: Any, lab_listener: socket.socket,
    resolvers: Callable[..., Resolver],
) -> None:
    engine: Engine = make_engine(POLICY)
    resolver = resolvers({"whatsapp.com": [LAB_ADDRESS]})
    events: list[dict[str, Any]] = []
    sensors = Sensors(network=NetworkSensor(min_interval=0.0),
                      dns=DnsWatch(resolver, admit=in_lab))
    watch = Watch(engine, sensors, events.append, timing=WatchTiming(network_interval=0.0))
    port = lab_listener.getsockname()[1]
    try:
        watch.start()
        with client_process(lab_listener) as client:
            def opened() -> dict[str, Any] | None:
                watch.step()
                return next((e for e in events if e["event"] == "opened"), None)

            event = wait(opened, what="the connection to be named after whatsapp.com")
            assert (event["app"], event["sensor"], event["verdict"]) == (
                "whatsapp", "network", "deny")
            assert event["matched"] == "network.domains: whatsapp.com (via DNS)"
            assert event["confidence"] == "medium"
            evidence = event["evidence"]
            assert evidence["remote_address"] == f"{LAB_ADDRESS}:{port}"
            assert evidence["remote_host"] == "whatsapp.com"
            assert evidence["host_from_dns"] is True
            assert evidence["pid"] == client.pid  # the owner was looked up: it was wanted
            assert resolver.asked.count("whatsapp.com") == 1

        def resolved() -> dict[str, Any] | None:
            watch.step()
            return next((e for e in events if e["event"] == "resolved"), None)

        assert wait(resolved, what="the closed connection to resolve")["key"] == event["key"]
    finally:
        watch.close()
    # Every catalog domain of the denied apps was asked for, none of another app's.
    assert set(resolver.asked) == set(engine.resolvable_domains)
    assert {"whatsapp.com", "whatsapp.net", "telegram.org"} <= set(resolver.asked)
    assert "chat.signal.org" not in resolver.asked


@pytest.mark.parametrize(("admit", "found"), [(in_lab, True), (None, False)],
                         ids=["lab-range-admitted", "product-default"])
def test_one_shot_scan_waits_for_answers_and_the_default_refuses_loopback(
    make_engine: Any, lab_listener: socket.socket, resolvers: Callable[..., Resolver],
    admit: Callable[[IPAddress], bool] | None, found: bool,
) -> None:
    engine: Engine = make_engine(POLICY)
    resolver = resolvers({"whatsapp.net": [LAB_ADDRESS]})
    dns = DnsWatch(resolver, admit=admit) if admit else DnsWatch(resolver)
    try:
        with client_process(lab_listener) as client:
            result = scan_once(engine, Sensors(network=NetworkSensor(), dns=dns))
    finally:
        dns.close()
    mine = [(f.app, f.evidence["remote_host"], f.evidence["pid"]) for f in result.findings]
    assert mine == ([("whatsapp", "whatsapp.net", client.pid)] if found else [])


@pytest.mark.parametrize(
    ("resolver_kwargs", "warning"),
    [({"hold": True}, "unanswered after 0.05 s"),
     ({"error": OSError("no DNS server answers")}, "failed (no DNS server answers)")],
    ids=["dns-hangs", "dns-raises"])
def test_a_dead_resolver_holds_up_neither_process_detection_nor_the_loop(
    default_engine: Engine, fakes: Any, wait: Any, resolvers: Callable[..., Resolver],
    resolver_kwargs: dict[str, Any], warning: str,
) -> None:
    resolver = resolvers({}, **resolver_kwargs)
    events: list[dict[str, Any]] = []
    warned: list[str] = []
    sensors = Sensors(processes=ProcessSensor(), network=NetworkSensor(min_interval=0.0),
                      dns=DnsWatch(resolver, timeout=0.05))
    watch = Watch(default_engine, sensors, events.append, warn=warned.append,
                  timing=WatchTiming(process_interval=0.001, network_interval=0.0))
    try:
        watch.start()
        process = fakes.start("telegram-desktop")

        def detected() -> dict[str, Any] | None:
            watch.step()
            return next((e for e in events
                         if e["event"] == "opened" and e.get("pid") == process.pid), None)

        assert wait(detected, what="the process despite DNS")["app"] == "telegram"
        wait(lambda: watch.step() or [m for m in warned if warning in m],
             what=f"a warning saying {warning!r}")
    finally:
        watch.close()


def test_a_hung_resolver_does_not_hold_up_a_one_shot_scan_beyond_its_timeout(
    default_engine: Engine, fakes: Any, resolvers: Callable[..., Resolver],
) -> None:
    process = fakes.start("telegram-desktop")
    dns = DnsWatch(resolvers({}, hold=True), timeout=0.05)
    try:
        result = scan_once(default_engine, Sensors(processes=ProcessSensor(),
                                                   network=NetworkSensor(), dns=dns))
    finally:
        dns.close()
    assert [f.app for f in result.findings if f.evidence.get("pid") == process.pid] == [
        "telegram"]
    assert any("unanswered after 0.05 s" in warning for warning in result.warnings)


def test_the_refresh_setting_reaches_the_sensors(tmp_path: Any, default_engine: Engine) -> None:
    from agent.scanning.sensor_set import SensorChoice
    from agent.settings import load_settings

    network_only = SensorChoice(processes=False, installed=False, network=True)
    off = WatchTiming.from_settings(load_settings(dns_refresh_interval=0, state_dir=tmp_path))
    assert off.dns_refresh_interval == 0
    assert Sensors.build(default_engine, network_only, False, off).dns is None
    hourly = WatchTiming.from_settings(load_settings(dns_refresh_interval=3600,
                                                     state_dir=tmp_path))
    dns = Sensors.build(default_engine, network_only, False, hourly).dns
    assert dns is not None and dns.refresh_interval == 3600
    dns.close()
