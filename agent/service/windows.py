"""The agent as a Windows service: speak the Service Control Manager's protocol.

The SCM starts a service program and expects it, within 30 s, to call
StartServiceCtrlDispatcherW, register a control handler and report RUNNING;
a program that does not is killed (error 1053). It then sends STOP (from
`sc stop`, services.msc, an uninstall) and SHUTDOWN (the machine is going
down), and the service reports STOP_PENDING with a rising checkpoint until
it reports STOPPED with its exit code, which drives the failure actions
(restart) that install-warden-agent.ps1 sets.

`Advapi32` is the thin interface over the three advapi32 calls, built on
ctypes (no pywin32: its `pythonservice.exe` host cannot find a venv's
packages, see pywin32 issue 1450). `WindowsService` is the protocol: the
state reports, the stop handshake and the exit code. Off Windows, tests
give `Advapi32` a recording stand-in for the DLL, so everything down to the
structures handed to SetServiceStatus runs here too.

The SCM must start the interpreter itself: a child process (a venv's
python.exe redirector, the warden-agent.exe launcher, a .bat) cannot connect
to it (error 1063). So the service runs the real python.exe on the launcher
file that `warden-agent install-service` writes (agent/service/files/
warden-agent-service.py.in), which calls `main` here.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.settings import AgentSettings

log = logging.getLogger("warden.agent.service")

SERVICE_NAME = "WardenAgent"

# winsvc.h / winerror.h
SERVICE_WIN32_OWN_PROCESS = 0x10
SERVICE_STOPPED = 1
SERVICE_START_PENDING = 2
SERVICE_STOP_PENDING = 3
SERVICE_RUNNING = 4
SERVICE_ACCEPT_STOP = 0x1
SERVICE_ACCEPT_SHUTDOWN = 0x4
SERVICE_CONTROL_STOP = 1
SERVICE_CONTROL_INTERROGATE = 4
SERVICE_CONTROL_SHUTDOWN = 5
NO_ERROR = 0
ERROR_CALL_NOT_IMPLEMENTED = 120
ERROR_FAILED_SERVICE_CONTROLLER_CONNECT = 1063
ERROR_SERVICE_SPECIFIC_ERROR = 1066
CTRL_LOGOFF_EVENT = 5
CTRL_SHUTDOWN_EVENT = 6

# The agent builds its policy engine and opens its spool while START_PENDING;
# a slow disk at boot can take seconds.
START_WAIT_HINT_MS = 30_000
# Stopping joins the sync/upload/action threads (each up to 10 s while a
# request times out). The checkpoint rises every STOP_TICK_S, within the hint.
STOP_WAIT_HINT_MS = 15_000
STOP_TICK_S = 2.0
# A clean stop takes seconds; one still going after this is hung.
STOP_DEADLINE_S = 60.0

EXIT_FAILED = 1
EXIT_BAD_SETTINGS = 2


class WindowsServiceError(Exception):
    """An SCM call failed; the message names the call and the Windows error code."""

    def __init__(self, call: str, code: int) -> None:
        hint = (" (the program was not started by the Service Control Manager: start the "
                "WardenAgent service, or use `warden-agent run` in a console)"
                if code == ERROR_FAILED_SERVICE_CONTROLLER_CONNECT else "")
        super().__init__(f"{call} failed with Windows error {code}{hint}")
        self.code = code


# -- the ctypes layer -----------------------------------------------------------

DWORD = ctypes.c_uint32
# Win64 has one calling convention; WINFUNCTYPE exists only on Windows.
_FUNCTYPE: Any = getattr(ctypes, "WINFUNCTYPE", ctypes.CFUNCTYPE)
SERVICE_MAIN_FUNCTION = _FUNCTYPE(None, DWORD, ctypes.POINTER(ctypes.c_wchar_p))
HANDLER_FUNCTION_EX = _FUNCTYPE(DWORD, DWORD, DWORD, ctypes.c_void_p, ctypes.c_void_p)
CONSOLE_CTRL_HANDLER = _FUNCTYPE(ctypes.c_int, DWORD)


class SERVICE_STATUS(ctypes.Structure):  # the Windows name
    _fields_ = [
        ("dwServiceType", DWORD),
        ("dwCurrentState", DWORD),
        ("dwControlsAccepted", DWORD),
        ("dwWin32ExitCode", DWORD),
        ("dwServiceSpecificExitCode", DWORD),
        ("dwCheckPoint", DWORD),
        ("dwWaitHint", DWORD),
    ]


class SERVICE_TABLE_ENTRYW(ctypes.Structure):  # the Windows name
    _fields_ = [("lpServiceName", ctypes.c_wchar_p), ("lpServiceProc", SERVICE_MAIN_FUNCTION)]


@dataclass(frozen=True)
class ServiceStatus:
    state: int
    controls_accepted: int = 0
    win32_exit_code: int = NO_ERROR
    service_exit_code: int = 0
    checkpoint: int = 0
    wait_hint_ms: int = 0


class Advapi32:
    """StartServiceCtrlDispatcherW, RegisterServiceCtrlHandlerExW, SetServiceStatus."""

    def __init__(self, advapi32: Any, kernel32: Any, last_error: Callable[[], int]) -> None:
        """`advapi32`/`kernel32`: loaded DLLs (ctypes.WinDLL) or stand-ins with the same
        functions; `last_error`: the thread's Windows error after a failed call."""
        self._dll = advapi32
        self._kernel32 = kernel32
        self._last_error = last_error
        self._dll.StartServiceCtrlDispatcherW.argtypes = [ctypes.POINTER(SERVICE_TABLE_ENTRYW)]
        self._dll.StartServiceCtrlDispatcherW.restype = ctypes.c_int
        self._dll.RegisterServiceCtrlHandlerExW.argtypes = [
            ctypes.c_wchar_p, HANDLER_FUNCTION_EX, ctypes.c_void_p]
        self._dll.RegisterServiceCtrlHandlerExW.restype = ctypes.c_void_p
        self._dll.SetServiceStatus.argtypes = [ctypes.c_void_p, ctypes.POINTER(SERVICE_STATUS)]
        self._dll.SetServiceStatus.restype = ctypes.c_int
        # The SCM and the console call back through these: they must outlive the calls.
        self._callbacks: list[Any] = []

    @classmethod
    def load(cls) -> Advapi32:
        windll: Any = getattr(ctypes, "WinDLL")  # noqa: B009 - absent off Windows
        return cls(windll("advapi32", use_last_error=True),
                   windll("kernel32", use_last_error=True),
                   getattr(ctypes, "get_last_error"))  # noqa: B009

    def start_dispatcher(self, name: str, service_main: Callable[[list[str]], None]) -> None:
        """Hand this thread to the SCM until every service of the process has stopped."""
        def entry(argc: int, argv: Any) -> None:
            service_main([argv[index] for index in range(argc)])

        table = (SERVICE_TABLE_ENTRYW * 2)()  # the last entry stays NULL: the terminator
        table[0].lpServiceName = name
        table[0].lpServiceProc = SERVICE_MAIN_FUNCTION(entry)
        self._callbacks.append(table)
        if not self._dll.StartServiceCtrlDispatcherW(table):
            raise WindowsServiceError("StartServiceCtrlDispatcherW", self._last_error())

    def register_handler(self, name: str, handler: Callable[[int], int]) -> int:
        def on_control(control: int, event_type: int, event_data: Any, context: Any) -> int:
            return handler(control)

        callback = HANDLER_FUNCTION_EX(on_control)
        self._callbacks.append(callback)
        status_handle = self._dll.RegisterServiceCtrlHandlerExW(name, callback, None)
        if not status_handle:
            raise WindowsServiceError("RegisterServiceCtrlHandlerExW", self._last_error())
        return int(status_handle)

    def set_status(self, status_handle: int, status: ServiceStatus) -> None:
        raw = SERVICE_STATUS(SERVICE_WIN32_OWN_PROCESS, status.state, status.controls_accepted,
                             status.win32_exit_code, status.service_exit_code,
                             status.checkpoint, status.wait_hint_ms)
        if not self._dll.SetServiceStatus(status_handle, ctypes.pointer(raw)):
            raise WindowsServiceError("SetServiceStatus", self._last_error())

    def survive_logoff(self) -> None:
        """Ignore CTRL_LOGOFF_EVENT and CTRL_SHUTDOWN_EVENT: the console's default handler
        would end the process when any user logs off (the reason the JVM has -Xrs), or at
        shutdown before the SCM's SHUTDOWN control lets the agent close its spool."""
        def on_console(event: int) -> int:
            return 1 if event in (CTRL_LOGOFF_EVENT, CTRL_SHUTDOWN_EVENT) else 0

        callback = CONSOLE_CTRL_HANDLER(on_console)
        self._callbacks.append(callback)
        self._kernel32.SetConsoleCtrlHandler(callback, 1)


# -- the protocol ---------------------------------------------------------------


class Daemon(Protocol):
    def run(self) -> int: ...

    def stop(self) -> None: ...


class WindowsService:
    """Run one daemon as the SCM's service, from START_PENDING to STOPPED."""

    def __init__(self, scm: Advapi32, make_daemon: Callable[[], Daemon],
                 name: str = SERVICE_NAME, stop_tick: float = STOP_TICK_S,
                 stop_deadline: float = STOP_DEADLINE_S) -> None:
        self._scm = scm
        self._make_daemon = make_daemon
        self._name = name
        self._stop_tick = stop_tick
        self._stop_deadline = stop_deadline
        self._handle = 0
        self._lock = threading.Lock()
        self._finished = False
        self._checkpoint = 0
        self._daemon: Daemon | None = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self.exit_code = EXIT_FAILED  # until the daemon has run and said otherwise

    def run(self) -> int:
        """Block in the SCM's dispatcher; the service's exit code when it returns."""
        self._scm.survive_logoff()
        self._scm.start_dispatcher(self._name, self._service_main)
        return self.exit_code

    # Runs on a thread the dispatcher starts.
    def _service_main(self, args: list[str]) -> None:
        try:
            self._handle = self._scm.register_handler(self._name, self._on_control)
        except WindowsServiceError:
            log.exception("cannot register the service control handler")
            return  # without a handle nothing can be reported; the SCM times out
        self._report(SERVICE_START_PENDING, wait_hint_ms=START_WAIT_HINT_MS)
        try:
            daemon = self._make_daemon()
        except Exception as exc:  # every failure must reach the SCM
            self.exit_code = EXIT_BAD_SETTINGS if isinstance(exc, ValueError) else EXIT_FAILED
            log.error("cannot start: %s", exc)
            self._report(SERVICE_STOPPED)
            return
        with self._lock:
            self._daemon = daemon
        self._report(SERVICE_RUNNING)
        try:
            self.exit_code = daemon.run()
        except BaseException:  # even SystemExit: the SCM must hear STOPPED
            log.exception("the agent failed")
            self.exit_code = EXIT_FAILED
        finally:
            self._stopped.set()
            # Logged first: the process may end as soon as the SCM hears STOPPED.
            log.info("service stopped with exit code %d", self.exit_code)
            self._report(SERVICE_STOPPED)

    # Runs on the dispatcher's thread: answer at once, never block it.
    def _on_control(self, control: int) -> int:
        if control in (SERVICE_CONTROL_STOP, SERVICE_CONTROL_SHUTDOWN):
            with self._lock:
                daemon = self._daemon
            if daemon is None or self._stopping.is_set():
                return NO_ERROR
            log.info("the Service Control Manager asks the agent to stop (control %d)", control)
            self._stopping.set()
            self._report(SERVICE_STOP_PENDING, wait_hint_ms=STOP_WAIT_HINT_MS)
            threading.Thread(target=self._tick_while_stopping, name="stop-pending",
                             daemon=True).start()
            daemon.stop()
            return NO_ERROR
        if control == SERVICE_CONTROL_INTERROGATE:
            return NO_ERROR  # the SCM keeps the last status reported
        return ERROR_CALL_NOT_IMPLEMENTED

    def _tick_while_stopping(self) -> None:
        # Each new checkpoint tells the SCM that stopping is progressing; past the
        # deadline the ticks stop, so a hung stop times out (the SCM then ends the
        # process) instead of holding `sc stop` and an uninstall forever.
        deadline = time.monotonic() + self._stop_deadline
        while not self._stopped.wait(self._stop_tick):
            if time.monotonic() >= deadline:
                log.error("the agent has not stopped after %.0f s; leaving it to the Service "
                          "Control Manager to end", self._stop_deadline)
                return
            self._report(SERVICE_STOP_PENDING, wait_hint_ms=STOP_WAIT_HINT_MS)

    def _report(self, state: int, wait_hint_ms: int = 0) -> None:
        with self._lock:
            if self._finished:
                return  # STOPPED is the last word; a late stop tick must not follow it
            self._finished = state == SERVICE_STOPPED
            pending = state in (SERVICE_START_PENDING, SERVICE_STOP_PENDING)
            self._checkpoint = self._checkpoint + 1 if pending else 0
            accepted = (SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
                        if state == SERVICE_RUNNING else 0)
            failed = state == SERVICE_STOPPED and self.exit_code != 0
            status = ServiceStatus(
                state=state, controls_accepted=accepted,
                win32_exit_code=ERROR_SERVICE_SPECIFIC_ERROR if failed else NO_ERROR,
                service_exit_code=self.exit_code if failed else 0,
                checkpoint=self._checkpoint, wait_hint_ms=wait_hint_ms)
            try:
                self._scm.set_status(self._handle, status)
            except WindowsServiceError:
                log.exception("cannot report service state %d", state)


# -- entry point ----------------------------------------------------------------


def main(argv: list[str] | None = None,
         load_scm: Callable[[], Advapi32] = Advapi32.load) -> int:
    """What the launcher runs: `python.exe warden-agent-service.py [--check]`."""
    parser = argparse.ArgumentParser(
        prog="warden-agent-service.py",
        description="The Warden agent's Windows service host; the Service Control Manager "
                    "starts it. Use --check to see whether it would start.")
    parser.add_argument("--check", action="store_true",
                        help="load the settings and the agent's modules, print where they "
                             "come from, and exit")
    args = parser.parse_args(argv)
    if args.check:
        return _check()
    from agent.logs import configure_logging
    from agent.settings import SettingsError, load_settings

    settings: AgentSettings | None = None
    problem = ""
    try:
        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format, settings.log_file)
    except SettingsError as exc:
        # Still start the dispatcher: the SCM then shows exit code 2, and the log says why.
        problem = str(exc)
        configure_logging("INFO", "text", _raw_log_file())

    def make_daemon() -> Daemon:
        from agent.daemon import AgentDaemon

        if settings is None:
            raise ValueError(problem)
        return AgentDaemon(settings)

    try:
        scm = load_scm()
    except (AttributeError, OSError) as exc:
        print(f"warden-agent-service: the Windows service host runs on Windows only ({exc})",
              file=sys.stderr)
        return EXIT_FAILED
    try:
        return WindowsService(scm, make_daemon).run()
    except WindowsServiceError as exc:
        print(f"warden-agent-service: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _raw_log_file() -> Path | None:
    value = os.environ.get("WARDEN_AGENT_LOG_FILE")
    return Path(value) if value else None


def _check() -> int:
    import agent
    import policies
    from agent.host.ownership import UntrustedPath, require_trusted_tree
    from agent.settings import SettingsError, default_config_dir, load_settings

    print(f"python    {sys.executable}")
    print(f"agent     {agent.__file__}")
    print(f"policies  {policies.__file__}")
    try:
        import psutil
        import requests
        import watchdog
    except ImportError as exc:
        print(f"missing   {exc.name}: install warden[agent] for this interpreter")
        return EXIT_FAILED
    for module in (psutil, requests, watchdog):
        print(f"{module.__name__:<9} {module.__file__}")
    try:
        settings = load_settings()
        # install-warden-agent.ps1 runs this before it makes %ProgramData%\Warden private:
        # a folder someone else made (with their agent.toml in it) is refused, not taken over.
        for folder in (default_config_dir(), settings.state_dir):
            require_trusted_tree(folder, "the agent's folder")
    except (SettingsError, UntrustedPath) as exc:
        print(exc)
        return EXIT_BAD_SETTINGS
    if not settings.server_url:
        print("server_url is not set: give WARDEN_AGENT_SERVER_URL or `server_url` in the "
              "config file")
        return EXIT_BAD_SETTINGS
    print(f"server    {settings.server_url}")
    print(f"state dir {settings.state_dir}")
    print(f"log file  {settings.log_file or '(standard error)'}")
    return 0
