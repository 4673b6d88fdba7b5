"""Linux: connections read from /proc/net/{tcp,tcp6,udp,udp6}, owners found on demand.

Listing the four tables is a few small reads. Owners are found by reading
the /proc/<pid>/fd links of every process, the costly part, so it is done
only for the inodes asked for, and stops as soon as all are found.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path
from typing import Literal

from agent.sensors.connections import RawConnection

# /proc/net/tcp state codes (include/net/tcp_states.h) of connections a
# process still holds: ESTABLISHED, SYN_SENT, SYN_RECV, CLOSE_WAIT.
_OPEN_TCP_STATES = frozenset({"01", "02", "03", "08"})
_TABLES: tuple[tuple[str, int, Literal["tcp", "udp"]], ...] = (
    ("tcp", socket.AF_INET, "tcp"),
    ("tcp6", socket.AF_INET6, "tcp"),
    ("udp", socket.AF_INET, "udp"),
    ("udp6", socket.AF_INET6, "udp"),
)
_LITTLE_ENDIAN = sys.byteorder == "little"


class ProcNetTable:
    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = str(proc)

    def connections(self) -> list[RawConnection]:
        """Each socket once. The kernel writes these tables over several reads, and a
        socket opened meanwhile can shift one already read into the next read: listed
        twice, by its inode, or, while not yet accepted, with inode 0 (then perhaps once
        more with its inode, accepted in between)."""
        by_inode: dict[int, RawConnection] = {}
        unaccepted: dict[tuple[object, ...], RawConnection] = {}
        for name, family, protocol in _TABLES:
            try:
                with open(f"{self._proc}/net/{name}", encoding="ascii") as handle:
                    lines = handle.readlines()[1:]
            except FileNotFoundError:
                continue  # no IPv6 on this kernel
            for line in lines:
                connection = _parse(line, family, protocol)
                if connection is None:
                    continue
                if connection.inode:
                    by_inode.setdefault(connection.inode, connection)
                else:
                    unaccepted.setdefault(_addresses(connection), connection)
        accepted = {_addresses(connection) for connection in by_inode.values()}
        return [*by_inode.values(),
                *(connection for key, connection in unaccepted.items() if key not in accepted)]

    def owners(self, inodes: set[int]) -> dict[int, int]:
        wanted = {f"socket:[{inode}]": inode for inode in inodes}
        owners: dict[int, int] = {}
        for entry in os.listdir(self._proc):
            if not entry.isdigit():
                continue
            directory = f"{self._proc}/{entry}/fd"
            try:
                fds = os.listdir(directory)
            except OSError:
                continue  # gone, or another user's (as non-root)
            for fd in fds:
                try:
                    target = os.readlink(f"{directory}/{fd}")
                except OSError:
                    continue
                inode = wanted.get(target)
                if inode is not None and inode not in owners:
                    owners[inode] = int(entry)
            if len(owners) == len(wanted):
                break
        return owners


def _parse(line: str, family: int, protocol: Literal["tcp", "udp"]) -> RawConnection | None:
    fields = line.split()
    if len(fields) < 10:
        return None
    state = fields[3]
    if protocol == "tcp" and state not in _OPEN_TCP_STATES:
        return None
    remote_ip, remote_port = _address(fields[2], family)
    if remote_port == 0:
        return None  # listening, or an unconnected UDP socket
    local_ip, local_port = _address(fields[1], family)
    return RawConnection(remote_ip=remote_ip, remote_port=remote_port, local_ip=local_ip,
                         local_port=local_port, protocol=protocol, inode=int(fields[9]))


def _addresses(connection: RawConnection) -> tuple[object, ...]:
    return (connection.protocol, connection.local_ip, connection.local_port,
            connection.remote_ip, connection.remote_port)


def _address(text: str, family: int) -> tuple[str, int]:
    # "0100007F:1F90": the address as the kernel's 32-bit words in host byte
    # order, then the port in hex.
    address, port = text.split(":")
    packed = bytes.fromhex(address)
    if _LITTLE_ENDIAN:
        words = len(packed) // 4
        packed = struct.pack(f">{words}I", *struct.unpack(f"<{words}I", packed))
    return socket.inet_ntop(family, packed), int(port, 16)
