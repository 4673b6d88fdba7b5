"""DNS correlation: the addresses of apps known only by name, looked up off the detection path.

WhatsApp, Signal, Viber, WeChat and Discord are in the catalog by domain, not
by network; a connection shows only an address. So the agent asks DNS for
the addresses of the domains its policy reports on (Engine.resolvable_domains),
every `refresh_interval`, and the network sensor names a connection to one of
them after that domain (agent.sensors.dns_table explains the table and what
keeps shared addresses out of it).

The caller is the scanner's loop, which also detects processes, so it never
waits for DNS: `update` only hands names to a few daemon worker threads and
collects what they have answered. A dead DNS server costs a warning and
nothing else: a look-up unanswered after `timeout` is reported, its worker
stays with it, and the name is not asked again until it returns, so the work
in flight is bounded by the number of domains and the threads by `workers`.
Daemon threads, so a stuck look-up cannot hold up the agent's exit either.

What can be looked up is the listed name itself. Catalog domains match as
suffixes ("whatsapp.net" also matches g.whatsapp.net), but a subdomain may
have other addresses, which stay unknown unless the catalog lists it too.
A wildcard ("*.example") names no host and is not looked up.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from agent.scanning.sensor_health import SensorHealth
from agent.sensors.dns_table import IPAddress, build_table, routable

DEFAULT_REFRESH_INTERVAL = 900.0
# The glibc resolver's own default is 5 s per server and try.
DEFAULT_TIMEOUT = 5.0
DEFAULT_WORKERS = 2
# A failed name is asked again sooner than a resolved one: at boot the agent
# may start before the network does.
RETRY_INTERVAL = 60.0

Resolver = Callable[[str], Iterable[str]]
"""A domain's addresses (as text); raises, with any exception, when it cannot say."""


def system_resolve(domain: str) -> list[str]:
    """The OS resolver's answer (hosts file, DNS, whatever nsswitch says)."""
    infos = socket.getaddrinfo(domain, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


class _Answer(NamedTuple):
    domain: str
    addresses: tuple[str, ...]
    error: str | None


class DnsWatch:
    """Keeps the address -> domain table of the policy's domains current."""

    def __init__(
        self,
        resolve: Resolver = system_resolve,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        timeout: float = DEFAULT_TIMEOUT,
        workers: int = DEFAULT_WORKERS,
        retain: float | None = None,
        admit: Callable[[IPAddress], bool] = routable,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.refresh_interval = refresh_interval
        self.timeout = timeout
        # Round-robin DNS rotates its answers and an app may hold a connection
        # to an address it was given an hour ago: keep addresses a while.
        self.retain = 4 * refresh_interval if retain is None else retain
        self.table: dict[str, str] = {}
        self.warnings: list[str] = []
        self._resolve = resolve
        self._workers = workers
        # Which answers count. Only tests and labs admit loopback or private
        # addresses (see dns_table.routable for why the product does not).
        self._admit = admit
        self._clock = clock
        self._threads: list[threading.Thread] = []
        self._jobs: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[_Answer] = queue.SimpleQueue()
        # Touched on the caller's thread only; the workers see the two queues.
        self._apps: dict[str, str] = {}
        self._answers: dict[str, dict[str, float]] = {}
        self._asked: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self._failed: dict[str, str] = {}
        # When the oldest kept answer ages out: the table is rebuilt then, or
        # when answers come in, not on every scan (parsing and checking 1,000
        # addresses takes about 15 ms; docs/benchmarks.md).
        self._stale_at = float("inf")
        self._changed = False
        # Wall-clock time of the last answer, for the sensor's health.
        self._last_answer: float | None = None

    def update(self, apps: Mapping[str, str]) -> dict[str, str]:
        """Collect answers, ask for the domains (-> app) that are due; the table now.

        Never waits: what has not been answered yet shows in a later update.
        """
        now = self._clock()
        self._collect(now)
        if apps != self._apps:
            self._changed = True
            self._apps = dict(apps)
            for kept in (self._answers, self._due, self._failed):
                for domain in set(kept) - set(apps):
                    del kept[domain]
        self._ask(now)
        if self._changed or now > self._stale_at:
            self._changed = False
            for seen in self._answers.values():
                for address in [a for a, when in seen.items() if now - when > self.retain]:
                    del seen[address]
            self.table = build_table(self._answers, self._apps, now=now, retain=self.retain,
                                     admit=self._admit)
            self._stale_at = self.retain + min(
                (when for seen in self._answers.values() for when in seen.values()),
                default=float("inf"))
        self.warnings = self._warnings(now)
        return self.table

    def wait(self, timeout: float) -> None:
        """Block until the look-ups in flight are answered, or `timeout` passes.

        For a one-shot scan only; the watch loop never calls it.
        """
        deadline = time.monotonic() + timeout
        while self._asked:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                answer = self._done.get(timeout=remaining)
            except queue.Empty:
                return
            self._record(answer, self._clock())

    def health(self) -> SensorHealth:
        """`stalled` while a look-up is unanswered past `timeout`, `error` while every
        domain's last look-up failed (DNS is down), else `ok`. Ask on the caller's thread."""
        now = self._clock()
        waiting = [domain for domain, asked in self._asked.items() if now - asked > self.timeout]
        if waiting:
            return SensorHealth("stalled", self._last_answer, (
                f"{len(waiting)} look-up(s) unanswered after {self.timeout:g} s, e.g. "
                f"{waiting[0]}; connections to apps known only by domain may be missed"))
        if self._apps and set(self._failed) >= set(self._apps):
            domain, error = next(iter(sorted(self._failed.items())))
            return SensorHealth("error", self._last_answer,
                                f"every look-up failed, e.g. {domain}: {error}"[:500])
        return SensorHealth("ok", self._last_answer)

    def close(self) -> None:
        """Let the workers go; a later `update` starts new ones."""
        for _ in self._threads:
            self._jobs.put(None)
        self._threads = []

    # -- internals ----------------------------------------------------------

    def _ask(self, now: float) -> None:
        for domain in self._apps:
            if domain not in self._asked and now >= self._due.get(domain, now):
                self._asked[domain] = now
                self._jobs.put(domain)
        while self._asked and len(self._threads) < self._workers:
            thread = threading.Thread(target=self._work, daemon=True,
                                      name=f"warden-dns-{len(self._threads)}")
            thread.start()
            self._threads.append(thread)

    def _work(self) -> None:
        while (domain := self._jobs.get()) is not None:
            try:
                answer = _Answer(domain, tuple(self._resolve(domain)), None)
            except Exception as exc:  # a resolver is outside code: any failure is a failed look-up
                answer = _Answer(domain, (), str(exc) or type(exc).__name__)
            self._done.put(answer)

    def _collect(self, now: float) -> None:
        while True:
            try:
                answer = self._done.get_nowait()
            except queue.Empty:
                return
            self._record(answer, now)

    def _record(self, answer: _Answer, now: float) -> None:
        domain = answer.domain
        self._asked.pop(domain, None)
        if domain not in self._apps:
            return  # the policy changed while it was being looked up
        if answer.error is not None:
            # Earlier answers are kept (until `retain`): one failure does not
            # make the app's servers move.
            self._failed[domain] = answer.error
            self._due[domain] = now + min(RETRY_INTERVAL, self.refresh_interval)
            return
        self._changed = True
        self._last_answer = time.time()
        self._failed.pop(domain, None)
        self._due[domain] = now + self.refresh_interval
        seen = self._answers.setdefault(domain, {})
        for address in answer.addresses:
            seen[address] = now

    def _warnings(self, now: float) -> list[str]:
        warnings = []
        if any(now - asked > self.timeout for asked in self._asked.values()):
            warnings.append(
                f"DNS look-ups of the policy's domains are unanswered after {self.timeout:g} s: "
                "connections to apps known only by domain may be missed until DNS answers")
        by_error: dict[str, list[str]] = {}
        for domain, error in sorted(self._failed.items()):
            by_error.setdefault(error, []).append(domain)
        for error, domains in by_error.items():
            named = ", ".join(domains[:3]) + (f" and {len(domains) - 3} more"
                                              if len(domains) > 3 else "")
            warnings.append(f"DNS look-up of {named} failed ({error}); retrying every "
                            f"{min(RETRY_INTERVAL, self.refresh_interval):g} s")
        return warnings
