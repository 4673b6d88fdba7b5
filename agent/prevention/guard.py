"""The agent's exec guard: runs the blocker while the policy has `block` rules (Linux, root).

It starts the blocker when a policy in force first says `block`, hands later
policies to it (which drops its decision cache), and stops it when no rule
blocks any more. Where the kernel or the privileges refuse, it says so in the
agent's sensor health (`block: fallback`) and the process sensor ends banned
apps after they start instead, in enforce mode.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable

from agent.prevention.blocker import Blocked, Blocker
from agent.prevention.fanotify import FanotifyUnavailable
from agent.scanning.sensor_health import SensorHealth
from policies.engine import Engine

log = logging.getLogger(__name__)


class ExecGuard:
    def __init__(self, on_block: Callable[[Blocked], None], privileged: bool) -> None:
        self._on_block = on_block
        self._privileged = privileged
        self._blocker: Blocker | None = None
        self._health: SensorHealth | None = None
        # The service's start and the sync thread may both hand over a policy at once.
        self._lock = threading.Lock()

    def update(self, engine: Engine) -> None:
        """Follow a new policy; callable from any thread."""
        with self._lock:
            self._update(engine)

    def _update(self, engine: Engine) -> None:
        if not engine.blocks_at_exec:
            self._stop()
            self._health = None
            return
        if self._blocker is not None:
            self._blocker.set_engine(engine)
            return
        if not sys.platform.startswith("linux") or not self._privileged:
            self._refused("exec blocking needs Linux and root (fanotify)")
            return
        blocker = Blocker(engine, self._on_block)
        try:
            blocker.start()
        except (FanotifyUnavailable, OSError) as exc:
            blocker.stop()
            self._refused(str(exc))
            return
        self._blocker = blocker
        self._health = SensorHealth("ok", time.time(),
                                    f"guarding execs on {len(blocker.marked)} mounts")
        log.info("exec blocking on: %d mounts marked", len(blocker.marked))

    def health(self) -> SensorHealth | None:
        """`block`'s health for the check-in and `warden-agent status`; None: not asked for."""
        blocker = self._blocker
        if blocker is None:
            return self._health
        stats = blocker.stats
        counts = (f"{stats.decisions} execs judged, {stats.denied} denied, "
                  f"{stats.fail_open} allowed unjudged (fail-open), "
                  f"{stats.overflows} kernel queue overflows")
        if not blocker.active:
            return SensorHealth("error", None, f"{stats.last_error}; {counts}")
        return SensorHealth("ok", time.time(), f"{len(blocker.marked)} mounts; {counts}")

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._blocker is not None:
            self._blocker.stop()
            self._blocker = None

    def _refused(self, why: str) -> None:
        self._health = SensorHealth(
            "fallback", None, f"{why}; banned apps are ended after they start instead "
            "(process sensor, enforce mode)")
        log.warning("exec blocking unavailable: %s", why)
