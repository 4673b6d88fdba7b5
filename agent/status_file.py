"""`status.json` in the state dir: what `warden-agent status` shows of a running agent.

Written at each check-in (with the status gathered for it) and rewritten with the
sync state after each check-in and upload, so `status` is current, not one
interval behind.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from agent.scanning.findings import format_time, utc_now
from agent.uplink.sync import SyncStatus
from policies.private_files import write_private

log = logging.getLogger("warden.agent")


class StatusFile:
    def __init__(self, path: Path, sync: SyncStatus) -> None:
        self.path = path
        self._sync = sync
        # The last status gathered for a check-in, and the self-watchdog's backoff then.
        self._last: tuple[dict[str, Any], float] | None = None

    def write(self, status: dict[str, Any], backoff: float) -> None:
        self._last = (status, backoff)
        report = {**status, **dataclasses.asdict(self._sync), "backoff_factor": backoff,
                  "written_at": format_time(utc_now())}
        try:
            write_private(self.path, json.dumps(report, indent=2).encode())
        except OSError as exc:
            # A full or read-only state disk must not stop check-ins: the server
            # still hears from the agent (and its spool depth) while `status` is stale.
            log.warning("cannot write %s: %s", self.path, exc)

    def refresh(self) -> None:
        """Rewrite it with the sync state as it is now (after a check-in or an upload)."""
        if self._last is not None:
            self.write(*self._last)
