"""A stand-in for advapi32/kernel32 that plays the Service Control Manager's side.

`agent.service.windows.Advapi32` calls it exactly as it calls the DLL: with ctypes
structures and callbacks. It runs ServiceMain on its own thread (as the SCM
does), records every SERVICE_STATUS handed to SetServiceStatus, and sends
controls through the registered handler, as `sc stop` would.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.service.windows import SERVICE_STOPPED, Advapi32

STATUS_HANDLE = 0x5CA1AB1E


class Export:
    """A DLL function: callable, and takes the argtypes/restype Advapi32 sets on it."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.argtypes: list[Any] | None = None
        self.restype: Any = None

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


@dataclass(frozen=True)
class Reported:
    handle: int
    service_type: int
    state: int
    controls_accepted: int
    win32_exit_code: int
    service_exit_code: int
    checkpoint: int
    wait_hint_ms: int


class FakeScm:
    def __init__(self, on_status: Callable[[Reported], None] | None = None,
                 dispatcher_error: int = 0) -> None:
        self.statuses: list[Reported] = []
        self.service_names: list[str] = []
        self.handler: Any = None
        self.console_handler: Any = None
        self.last_error = 0
        self._on_status = on_status
        self._dispatcher_error = dispatcher_error
        self._changed = threading.Condition()
        self.advapi32 = type("advapi32", (), {})()
        self.advapi32.StartServiceCtrlDispatcherW = Export(self._dispatch)
        self.advapi32.RegisterServiceCtrlHandlerExW = Export(self._register)
        self.advapi32.SetServiceStatus = Export(self._set_status)
        self.kernel32 = type("kernel32", (), {})()
        self.kernel32.SetConsoleCtrlHandler = Export(self._set_console_handler)

    def api(self) -> Advapi32:
        return Advapi32(self.advapi32, self.kernel32, lambda: self.last_error)

    # -- the DLL's functions ----------------------------------------------------

    def _dispatch(self, table: Any) -> int:
        if self._dispatcher_error:
            self.last_error = self._dispatcher_error
            return 0
        # The table ends with an all-NULL entry, as StartServiceCtrlDispatcherW requires.
        assert table[1].lpServiceName is None and not table[1].lpServiceProc
        name = table[0].lpServiceName
        argv = (ctypes.c_wchar_p * 1)(name)
        main = threading.Thread(target=table[0].lpServiceProc, args=(1, argv),
                                name="ServiceMain")
        main.start()
        main.join()  # the real dispatcher returns once the service reported STOPPED
        return 1

    def _register(self, name: str, handler: Any, context: Any) -> int:
        self.service_names.append(name)
        self.handler = handler
        return STATUS_HANDLE

    def _set_status(self, handle: int, status: Any) -> int:
        raw = status.contents
        reported = Reported(handle, raw.dwServiceType, raw.dwCurrentState,
                            raw.dwControlsAccepted, raw.dwWin32ExitCode,
                            raw.dwServiceSpecificExitCode, raw.dwCheckPoint, raw.dwWaitHint)
        with self._changed:
            self.statuses.append(reported)
            self._changed.notify_all()
        if self._on_status is not None:
            self._on_status(reported)
        return 1

    def _set_console_handler(self, handler: Any, add: int) -> int:
        self.console_handler = handler
        return 1

    # -- what the test does ------------------------------------------------------

    def control(self, code: int) -> int:
        """Send a control to the service, as the SCM's dispatcher thread would."""
        return int(self.handler(code, 0, None, None))

    def wait_for_state(self, state: int, timeout: float = 30.0) -> Reported:
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(status.state == state for status in self.statuses), timeout)
        assert found, f"the service never reported state {state}: {self.states()}"
        return next(status for status in self.statuses if status.state == state)

    def states(self) -> list[int]:
        return [status.state for status in self.statuses]

    @property
    def stopped(self) -> bool:
        return bool(self.statuses) and self.statuses[-1].state == SERVICE_STOPPED
