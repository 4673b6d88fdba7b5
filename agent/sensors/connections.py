"""Connections as an OS lists them: the type the network sensor and its tables share.

Kept apart from agent.sensors.network (which chooses a table) and procnet (one table),
so the tables import the type and the chooser imports the tables, never the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from policies.vocabulary import Protocol as TransportProtocol


@dataclass(frozen=True, slots=True)
class RawConnection:
    """A connection as the OS lists it; its owner may still have to be looked up."""

    remote_ip: str
    remote_port: int
    local_ip: str
    local_port: int
    protocol: TransportProtocol
    pid: int | None = None
    # Socket inode, for tables that find owners separately (Linux /proc).
    inode: int | None = None


class ConnectionTable(Protocol):
    def connections(self) -> list[RawConnection]:
        """Open connections with a remote end; may raise psutil.AccessDenied."""
        ...

    def owners(self, inodes: set[int]) -> dict[int, int]:
        """Socket inode -> pid, for those that can be found."""
        ...
