"""The Windows service host speaks the SCM's protocol: states, stop handshake, exit codes.

advapi32 is replaced by tests/agent/fake_scm.py, which receives the same ctypes
structures and callbacks the DLL would. The end-to-end run with a real agent
and server is tests/e2e/test_windows_service.py.
"""

from __future__ import annotations

import ctypes
import threading

import pytest

from agent.service.windows import (
    CTRL_LOGOFF_EVENT,
    CTRL_SHUTDOWN_EVENT,
    ERROR_CALL_NOT_IMPLEMENTED,
    ERROR_FAILED_SERVICE_CONTROLLER_CONNECT,
    ERROR_SERVICE_SPECIFIC_ERROR,
    NO_ERROR,
    SERVICE_ACCEPT_SHUTDOWN,
    SERVICE_ACCEPT_STOP,
    SERVICE_CONTROL_INTERROGATE,
    SERVICE_CONTROL_SHUTDOWN,
    SERVICE_CONTROL_STOP,
    SERVICE_RUNNING,
    SERVICE_START_PENDING,
    SERVICE_STATUS,
    SERVICE_STOP_PENDING,
    SERVICE_STOPPED,
    SERVICE_WIN32_OWN_PROCESS,
    START_WAIT_HINT_MS,
    STOP_WAIT_HINT_MS,
    WindowsService,
    WindowsServiceError,
    main,
)
from tests.agent.fake_scm import STATUS_HANDLE, FakeScm

SERVICE_CONTROL_PAUSE = 2


class FakeDaemon:
    """Runs until stopped; `slow_stop` holds run() back after stop() to show STOP_PENDING."""

    def __init__(self, exit_code: int = 0, fail: BaseException | None = None) -> None:
        self.exit_code = exit_code
        self.fail = fail
        self.running = threading.Event()
        self.stop_requested = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def run(self) -> int:
        self.running.set()
        if self.fail is not None:
            raise self.fail
        self.stop_requested.wait(30)
        self.release.wait(30)
        return self.exit_code

    def stop(self) -> None:
        self.stop_requested.set()


def run_service(scm: FakeScm, service: WindowsService) -> tuple[threading.Thread, list[int]]:
    """The dispatcher blocks the calling thread, as on Windows: run it on its own."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(service.run()), name="dispatcher")
    thread.start()
    return thread, result


def test_the_status_structure_has_the_windows_layout() -> None:
    # SERVICE_STATUS is seven DWORDs; a wrong size would corrupt the SCM's view.
    assert ctypes.sizeof(SERVICE_STATUS) == 28


def test_start_run_stop_reports_each_state_in_order() -> None:
    scm = FakeScm()
    daemon = FakeDaemon()
    service = WindowsService(scm.api(), lambda: daemon, name="WardenAgent")
    thread, result = run_service(scm, service)
    running = scm.wait_for_state(SERVICE_RUNNING)
    assert scm.service_names == ["WardenAgent"]
    start = scm.statuses[0]
    assert (start.state, start.checkpoint, start.wait_hint_ms) == (
        SERVICE_START_PENDING, 1, START_WAIT_HINT_MS)
    assert start.controls_accepted == 0  # no stop while starting
    assert start.handle == STATUS_HANDLE and start.service_type == SERVICE_WIN32_OWN_PROCESS
    assert running.controls_accepted == SERVICE_ACCEPT_STOP | SERVICE_ACCEPT_SHUTDOWN
    assert running.checkpoint == 0 and running.wait_hint_ms == 0
    assert daemon.running.wait(10)

    assert scm.control(SERVICE_CONTROL_STOP) == NO_ERROR
    thread.join(30)
    assert not thread.is_alive()
    assert result == [0]
    assert scm.states() == [SERVICE_START_PENDING, SERVICE_RUNNING, SERVICE_STOP_PENDING,
                            SERVICE_STOPPED]
    stopped = scm.statuses[-1]
    assert (stopped.win32_exit_code, stopped.service_exit_code) == (NO_ERROR, 0)
    assert stopped.controls_accepted == 0


def test_a_slow_stop_keeps_raising_the_checkpoint_until_stopped() -> None:
    scm = FakeScm()
    daemon = FakeDaemon()
    daemon.release.clear()
    service = WindowsService(scm.api(), lambda: daemon, stop_tick=0.01)
    thread, _ = run_service(scm, service)
    scm.wait_for_state(SERVICE_RUNNING)
    scm.control(SERVICE_CONTROL_STOP)
    with scm._changed:  # wait for at least three stop-pending reports
        assert scm._changed.wait_for(lambda: scm.states().count(SERVICE_STOP_PENDING) >= 3, 10)
    daemon.release.set()
    thread.join(30)
    pending = [status for status in scm.statuses if status.state == SERVICE_STOP_PENDING]
    checkpoints = [status.checkpoint for status in pending]
    assert checkpoints == sorted(set(checkpoints)), "checkpoints must strictly rise"
    assert all(status.wait_hint_ms == STOP_WAIT_HINT_MS for status in pending)
    # STOPPED is the last word: no late stop-pending tick after it.
    assert scm.states()[-1] == SERVICE_STOPPED
    assert scm.states().count(SERVICE_STOPPED) == 1


def test_shutdown_stops_the_agent_like_stop() -> None:
    scm = FakeScm()
    daemon = FakeDaemon()
    thread, result = run_service(scm, WindowsService(scm.api(), lambda: daemon))
    scm.wait_for_state(SERVICE_RUNNING)
    assert scm.control(SERVICE_CONTROL_SHUTDOWN) == NO_ERROR
    thread.join(30)
    assert daemon.stop_requested.is_set() and result == [0] and scm.stopped


def test_interrogate_is_answered_and_unknown_controls_are_refused() -> None:
    scm = FakeScm()
    daemon = FakeDaemon()
    thread, _ = run_service(scm, WindowsService(scm.api(), lambda: daemon))
    scm.wait_for_state(SERVICE_RUNNING)
    assert scm.control(SERVICE_CONTROL_INTERROGATE) == NO_ERROR
    assert scm.control(SERVICE_CONTROL_PAUSE) == ERROR_CALL_NOT_IMPLEMENTED
    assert not daemon.stop_requested.is_set()
    # A second STOP while stopping changes nothing.
    scm.control(SERVICE_CONTROL_STOP)
    scm.control(SERVICE_CONTROL_STOP)
    thread.join(30)
    assert scm.states().count(SERVICE_STOP_PENDING) == 1


def test_bad_settings_stop_the_service_with_exit_code_2_and_never_run() -> None:
    scm = FakeScm()

    def make_daemon() -> FakeDaemon:
        raise ValueError("server_url is not set")

    service = WindowsService(scm.api(), make_daemon)
    assert service.run() == 2
    assert scm.states() == [SERVICE_START_PENDING, SERVICE_STOPPED]
    stopped = scm.statuses[-1]
    # The SCM shows "service-specific error 2" and runs the failure actions.
    assert (stopped.win32_exit_code, stopped.service_exit_code) == (
        ERROR_SERVICE_SPECIFIC_ERROR, 2)


def test_a_crashing_agent_reports_a_failure_so_the_scm_restarts_it() -> None:
    scm = FakeScm()
    daemon = FakeDaemon(fail=RuntimeError("disk vanished"))
    assert WindowsService(scm.api(), lambda: daemon).run() == 1
    assert scm.states() == [SERVICE_START_PENDING, SERVICE_RUNNING, SERVICE_STOPPED]
    assert (scm.statuses[-1].win32_exit_code, scm.statuses[-1].service_exit_code) == (
        ERROR_SERVICE_SPECIFIC_ERROR, 1)


def test_a_failing_agent_exit_code_reaches_the_scm() -> None:
    scm = FakeScm()
    daemon = FakeDaemon(exit_code=3)
    thread, result = run_service(scm, WindowsService(scm.api(), lambda: daemon))
    scm.wait_for_state(SERVICE_RUNNING)
    scm.control(SERVICE_CONTROL_STOP)
    thread.join(30)
    assert result == [3]
    assert scm.statuses[-1].service_exit_code == 3


def test_outside_the_scm_the_dispatcher_error_is_explained() -> None:
    scm = FakeScm(dispatcher_error=ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
    service = WindowsService(scm.api(), FakeDaemon)
    with pytest.raises(WindowsServiceError, match=r"1063.*not started by the Service Control"):
        service.run()


def test_main_outside_the_scm_says_so_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    scm = FakeScm(dispatcher_error=ERROR_FAILED_SERVICE_CONTROLLER_CONNECT)
    assert main([], load_scm=scm.api) == 1
    assert "warden-agent run` in a console" in capsys.readouterr().err


def test_a_user_logging_off_does_not_end_the_service() -> None:
    scm = FakeScm()
    daemon = FakeDaemon(fail=RuntimeError("stop at once"))
    WindowsService(scm.api(), lambda: daemon).run()
    assert scm.console_handler is not None
    assert scm.console_handler(CTRL_LOGOFF_EVENT) == 1  # handled: the process lives on
    assert scm.console_handler(CTRL_SHUTDOWN_EVENT) == 1  # the SCM's SHUTDOWN stops it
    assert scm.console_handler(0) == 0  # Ctrl+C still goes to the next handler


def test_a_hung_stop_stops_ticking_so_the_scm_can_time_it_out() -> None:
    scm = FakeScm()
    daemon = FakeDaemon()
    daemon.release.clear()  # run() never returns on its own
    service = WindowsService(scm.api(), lambda: daemon, stop_tick=0.01, stop_deadline=0.2)
    thread, _ = run_service(scm, service)
    scm.wait_for_state(SERVICE_RUNNING)
    scm.control(SERVICE_CONTROL_STOP)
    with scm._changed:
        assert scm._changed.wait_for(lambda: scm.states().count(SERVICE_STOP_PENDING) >= 3, 10)
    ticks = scm.states().count(SERVICE_STOP_PENDING)
    # Past the deadline no checkpoint rises any more (waits on the condition, with
    # a deadline, for a report that must not come).
    with scm._changed:
        assert not scm._changed.wait_for(
            lambda: scm.states().count(SERVICE_STOP_PENDING) > ticks + 25, 1.0)
    assert scm.states()[-1] == SERVICE_STOP_PENDING
    daemon.release.set()
    thread.join(30)
    assert scm.states()[-1] == SERVICE_STOPPED


def test_even_system_exit_in_the_agent_reports_stopped() -> None:
    scm = FakeScm()
    daemon = FakeDaemon(fail=SystemExit(0))
    assert WindowsService(scm.api(), lambda: daemon).run() == 1
    assert scm.states()[-1] == SERVICE_STOPPED
