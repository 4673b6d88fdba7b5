"""The network sensor: open connections to remote addresses, with their owning process.

Finding a connection's process means walking every process's file
descriptors, which is what makes listing connections costly. So the sensor
takes a `wanted` filter (the policy engine's "does this match anything?"),
lists connections first, and looks for owners only of the wanted ones: on an
ordinary machine that is none, and a listing costs a few small reads. The
watch loop still asks at most every `min_interval` seconds.

A connection whose remote address is in the `hosts` table (address -> domain,
from the agent's DNS look-ups, agent.sensors.dns) is named after that domain,
marked as inferred, before `wanted` sees it: the engine's domain matching then
applies to apps known only by name. Nothing is filtered here by address:
loopback and private answers are kept out of that table, not out of the listing.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Callable, Mapping

import psutil

from agent.sensors.connections import ConnectionTable, RawConnection
from agent.sensors.dns_table import host_for
from policies.observations import ConnectionObservation

DEFAULT_MIN_INTERVAL = 10.0

# TCP states of a connection some process still holds. TIME_WAIT and the
# closing states after our own close() belong to no process any more: counting
# them would keep a finding open (and ownerless) after the app let go.
_OPEN_TCP_STATES = frozenset({
    psutil.CONN_ESTABLISHED,
    psutil.CONN_SYN_SENT,
    psutil.CONN_SYN_RECV,
    psutil.CONN_CLOSE_WAIT,
})


class PsutilTable:
    """The portable table: psutil finds owners while listing (macOS, Windows)."""

    def connections(self) -> list[RawConnection]:
        found: list[RawConnection] = []
        for conn in psutil.net_connections(kind="inet"):
            if not conn.raddr:
                continue
            udp = conn.type == socket.SOCK_DGRAM
            if not udp and conn.status not in _OPEN_TCP_STATES:
                continue
            found.append(RawConnection(
                remote_ip=conn.raddr.ip, remote_port=conn.raddr.port,
                local_ip=conn.laddr.ip if conn.laddr else "",
                local_port=conn.laddr.port if conn.laddr else 0,
                protocol="udp" if udp else "tcp", pid=conn.pid or None))
        return found

    def owners(self, inodes: set[int]) -> dict[int, int]:
        return {}


def default_table() -> ConnectionTable:
    if sys.platform.startswith("linux") and os.path.exists("/proc/net/tcp"):
        from agent.sensors.procnet import ProcNetTable

        return ProcNetTable()
    return PsutilTable()


Wanted = Callable[[ConnectionObservation], bool]


class NetworkSensor:
    def __init__(
        self,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        *,
        privileged: bool = True,
        clock: Callable[[], float] = time.monotonic,
        table: ConnectionTable | None = None,
    ) -> None:
        self.min_interval = min_interval
        self.warnings: list[str] = []
        self._privileged = privileged
        self._clock = clock
        self._table = table or default_table()
        self._last: float | None = None

    def next_due(self) -> float:
        """The clock time from which `scan` may run again."""
        return self._clock() if self._last is None else self._last + self.min_interval

    def due(self) -> bool:
        return self._clock() >= self.next_due()

    def scan(
        self, wanted: Wanted | None = None, hosts: Mapping[str, str] | None = None
    ) -> list[ConnectionObservation] | None:
        """The current connections (only `wanted` ones, if given); None if they cannot be listed.

        `hosts` (address -> domain) names connections to addresses DNS gave for a domain.

        None is not "no connections": the caller keeps what it knew rather than
        resolving every network finding because the OS said no.
        """
        self._last = self._clock()
        try:
            raw = self._table.connections()
        except psutil.AccessDenied:
            self.warnings = ["network connections could not be listed: access denied "
                             "(on macOS the agent must run as root)"]
            return None
        named = [(conn, host_for(hosts, conn.remote_ip) if hosts else None) for conn in raw]
        if wanted is not None:
            named = [(conn, host) for conn, host in named
                     if wanted(_observation(conn, None, None, host))]
        lookup = {conn.inode for conn, _ in named if conn.pid is None and conn.inode}
        owners = self._table.owners(lookup) if lookup else {}
        names: dict[int, str | None] = {}
        observations = []
        for conn, host in named:
            pid = conn.pid or (owners.get(conn.inode) if conn.inode else None)
            observations.append(_observation(conn, pid, _process_name(pid, names), host))
        self.warnings = []
        ownerless = sum(1 for observation in observations if observation.pid is None)
        if ownerless and not self._privileged:
            self.warnings.append(
                f"ran as ordinary user: {ownerless} connections belong to processes of other "
                "users, which could not be identified (run as root/Administrator to see them)"
            )
        return observations


def _observation(
    conn: RawConnection, pid: int | None, name: str | None, host: str | None
) -> ConnectionObservation:
    return ConnectionObservation(
        remote_ip=conn.remote_ip, remote_port=conn.remote_port, local_ip=conn.local_ip,
        local_port=conn.local_port, protocol=conn.protocol, pid=pid, process_name=name,
        remote_host=host, host_from_dns=host is not None)


def _process_name(pid: int | None, names: dict[int, str | None]) -> str | None:
    if pid is None:
        return None
    if pid not in names:
        try:
            names[pid] = psutil.Process(pid).name()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            names[pid] = None
    return names[pid]
