"""Exec events: the kernel says "pid N just exec'd" the moment it happens (Linux, root).

The process sensor polls every quarter second; the kernel's process events
connector (netlink, `CN_IDX_PROC`) pushes a `PROC_EVENT_EXEC` for every exec
instead, so the scanner can read and judge the new program within
milliseconds. It is an accelerator, never the only net:

- The connector needs CAP_NET_ADMIN and the initial network and PID
  namespaces; elsewhere (an ordinary user, most containers) the kernel takes
  the subscription and sends nothing. So `start` proves it works: it runs
  `/bin/true` and waits for that exec's event. No event: the sensor reports
  `fallback` and polling carries on alone.
- The kernel drops events it cannot queue (it sends with GFP_NOWAIT); a full
  socket buffer shows as `ENOBUFS` on the next read. Lost events mean unseen
  execs, so `on_lost` asks the scanner for a full process rescan.

The listening thread only forwards pids: reading /proc and judging happen on
the scanner's thread, which owns the process sensor.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from agent.scanning.sensor_health import SensorHealth

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
PROC_EVENT_EXEC = 0x00000002

# nlmsghdr (16 bytes) + cn_msg (20 bytes); the proc_event starts after them.
_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_EXEC_DATA = struct.Struct("=ii")  # process_pid, process_tgid
_EVENT_OFFSET = _NLMSGHDR.size + _CN_MSG.size
# A burst of execs must fit while the thread is descheduled; the kernel doubles this.
RECEIVE_BUFFER = 4 * 1024 * 1024
# How long `start` waits for the event of its own probe exec.
PROBE_TIMEOUT = 2.0


class ExecEventsUnavailable(Exception):
    """The connector cannot be used here; the message says why."""


def parse_exec_pids(data: bytes) -> list[int]:
    """The tgids of the PROC_EVENT_EXEC events in one datagram (others are skipped)."""
    pids: list[int] = []
    offset = 0
    while offset + _EVENT_OFFSET + _EVENT_HEAD.size <= len(data):
        length = _NLMSGHDR.unpack_from(data, offset)[0]
        if length < _EVENT_OFFSET + _EVENT_HEAD.size or offset + length > len(data):
            break
        what = _EVENT_HEAD.unpack_from(data, offset + _EVENT_OFFSET)[0]
        body = offset + _EVENT_OFFSET + _EVENT_HEAD.size
        if what == PROC_EVENT_EXEC and body + _EXEC_DATA.size <= offset + length:
            pids.append(_EXEC_DATA.unpack_from(data, body)[1])
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return pids


def _control(operation: int) -> bytes:
    payload = struct.pack("=I", operation)
    message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(message), NLMSG_DONE, 0, 0, 0) + message


class ExecEvents:
    """Subscribes to exec events and hands each exec'd pid to `on_exec` (on its own thread)."""

    def __init__(self, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self._probe_timeout = probe_timeout
        self._socket: socket.socket | None = None
        self._selector: selectors.DefaultSelector | None = None
        self._stop_read, self._stop_write = -1, -1
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        # Until `start` has proved the connector works, polling is all there is.
        self._health = SensorHealth("fallback", None, "not listening yet; new processes are "
                                    "found by polling")
        self.lost = 0  # times the kernel dropped events (ENOBUFS)
        self.received = 0

    def health(self) -> SensorHealth:
        with self._lock:
            return self._health

    def start(self, on_exec: Callable[[int], None], on_lost: Callable[[], None]) -> bool:
        """Listen; False (health `fallback`, saying why) where the connector does not work."""
        try:
            sock = self._subscribe()
        except ExecEventsUnavailable as exc:
            self._set(SensorHealth("fallback", None,
                                   f"{exc}; new processes are found by polling instead"))
            return False
        self._socket = sock
        self._stop_read, self._stop_write = os.pipe()
        self._selector = selectors.DefaultSelector()
        self._selector.register(sock, selectors.EVENT_READ)
        self._selector.register(self._stop_read, selectors.EVENT_READ)
        self._set(SensorHealth("ok", time.time()))
        self._thread = threading.Thread(target=self._listen, args=(on_exec, on_lost),
                                        name="warden-exec-events", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        if self._stop_write >= 0:
            os.write(self._stop_write, b"x")
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None
        for fd in (self._stop_read, self._stop_write):
            if fd >= 0:
                os.close(fd)
        self._stop_read = self._stop_write = -1
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- internals ----------------------------------------------------------

    def _set(self, health: SensorHealth) -> None:
        with self._lock:
            self._health = health

    def _subscribe(self) -> socket.socket:
        if not sys.platform.startswith("linux"):
            raise ExecEventsUnavailable("exec events need Linux's process events connector")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        except OSError as exc:
            raise ExecEventsUnavailable(f"no netlink connector socket ({exc})") from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
            sock.bind((0, CN_IDX_PROC))
            sock.send(_control(PROC_CN_MCAST_LISTEN))
            self._probe(sock)
        except (OSError, ExecEventsUnavailable) as exc:
            sock.close()
            if isinstance(exc, ExecEventsUnavailable):
                raise
            hint = " (needs root: CAP_NET_ADMIN)" if exc.errno in (errno.EPERM,
                                                                   errno.EACCES) else ""
            raise ExecEventsUnavailable(f"cannot subscribe to exec events: {exc}{hint}") from exc
        return sock

    def _probe(self, sock: socket.socket) -> None:
        """Run one exec and wait for its event: the kernel ignores a subscription from
        outside its initial namespaces without an error, so silence is the only sign."""
        probe = subprocess.Popen(["/bin/true"], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe.wait()
        deadline = time.monotonic() + self._probe_timeout
        sock.settimeout(self._probe_timeout)
        try:
            while time.monotonic() < deadline:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                if probe.pid in parse_exec_pids(data):
                    return
        finally:
            sock.settimeout(None)
        raise ExecEventsUnavailable(
            "the kernel sends no exec events to this agent (a container's namespaces, "
            "or no CAP_NET_ADMIN)")

    def _listen(self, on_exec: Callable[[int], None], on_lost: Callable[[], None]) -> None:
        sock, selector = self._socket, self._selector
        assert sock is not None and selector is not None
        sock.setblocking(False)
        while True:
            for key, _ in selector.select():
                if key.fileobj == self._stop_read:
                    return
            while True:
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        # Events were dropped: some exec went unseen. Rescan everything.
                        self.lost += 1
                        on_lost()
                        continue
                    self._set(SensorHealth("error", self.health().last_ok,
                                           f"reading exec events failed: {exc}; polling "
                                           "carries on"))
                    return
                for pid in parse_exec_pids(data):
                    self.received += 1
                    on_exec(pid)
                self._set(SensorHealth("ok", time.time()))
