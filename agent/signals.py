"""How `warden-agent run` answers signals: SIGTERM and SIGINT stop it, SIGUSR1 makes it
check in now. Handlers only set flags and events; the threads do the work."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

Handler = Callable[[int, FrameType | None], Any] | int | None


def install_signal_handlers(request_stop: Callable[[], None],
                            check_in_now: Callable[[], None]) -> dict[int, Handler]:
    """SIGTERM/SIGINT stop the agent; SIGUSR1 makes it check in now (`systemctl kill -s USR1
    warden-agent` after pushing a policy, instead of waiting for the next check-in)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        request_stop()

    def on_check_in(signum: int, frame: FrameType | None) -> None:
        check_in_now()  # sets an Event: safe from a handler

    previous: dict[int, Handler] = {}
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    if hasattr(signal, "SIGUSR1"):  # not on Windows
        previous[signal.SIGUSR1] = signal.signal(signal.SIGUSR1, on_check_in)
    return previous


def restore_signal_handlers(previous: dict[int, Handler]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
