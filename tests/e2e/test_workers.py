"""`warden server run --workers N`: N server processes on one port, on PostgreSQL only.

On SQLite more than one worker is refused before anything starts. On PostgreSQL
the command's process supervises N workers: each answers, one killed is
replaced, failed enrollments spread over them reach the limit at the same count
as on one process, and stopping the command stops them all.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import requests

from tests.agent.conftest import wait_for
from tests.e2e.conftest import BIN, WardenServer
from tests.e2e.pg_control import base_url, fresh_database

WORKERS = 3
ENROLL_LIMIT = 4


def test_more_than_one_worker_on_sqlite_is_refused_with_the_way_out(tmp_path: Path) -> None:
    server = WardenServer(tmp_path / "data", tmp_path / "server.log")
    run = subprocess.run(
        [str(BIN / "warden"), "server", "run", "--data-dir", str(server.data_dir),
         "--port", "0", "--workers", "2"],
        capture_output=True, text=True, env=server.env, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "2 workers need PostgreSQL" in run.stderr
    assert "WARDEN_DATABASE_URL" in run.stderr and "--workers 1" in run.stderr


def workers_of(server: WardenServer) -> list[psutil.Process]:
    assert server.process is not None
    # The supervisor's children that serve (multiprocessing may add a resource tracker).
    return [child for child in psutil.Process(server.process.pid).children()
            if "resource_tracker" not in " ".join(child.cmdline())]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[WardenServer]:
    cluster = base_url()
    if cluster is None:
        pytest.skip("workers run on PostgreSQL: set WARDEN_TEST_DATABASE_URL")
    with fresh_database(cluster, prefix="warden_workers") as url:
        warden = WardenServer(tmp_path / "data", tmp_path / "server.log", env={
            "WARDEN_DATABASE_URL": url,
            "WARDEN_ENROLL_FAILURES_PER_ADDRESS": str(ENROLL_LIMIT)})
        warden.run_args = ["--workers", str(WORKERS)]
        # Each worker imports and builds the whole app: on a busy 2-core machine, a while.
        warden.startup_timeout = 180.0
        try:
            warden.start()
            yield warden
        finally:
            if warden.process is not None:
                warden.stop(signal.SIGKILL)


def enroll_guess(server: WardenServer) -> int:
    # A new connection each time: the kernel hands each to any of the workers.
    with requests.Session() as session:
        return session.post(f"{server.url}/api/v1/agent/enroll", json={}, timeout=10,
                            headers={"Authorization": "Bearer wen_guess",
                                     "Connection": "close"}).status_code


# Start-up alone may take minutes: N workers each import and build the app on 2 busy cores.
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_workers_serve_one_port_as_one_server_and_a_dead_one_is_replaced(
    server: WardenServer,
) -> None:
    wait_for(lambda: len(workers_of(server)) == WORKERS, 60, f"{WORKERS} workers")
    first = {worker.pid for worker in workers_of(server)}

    statuses = [enroll_guess(server) for _ in range(ENROLL_LIMIT + 2)]
    assert statuses == [401] * ENROLL_LIMIT + [429, 429]

    victim = workers_of(server)[0]
    victim.kill()
    victim.wait(30)
    wait_for(lambda: len(workers_of(server)) == WORKERS
             and {worker.pid for worker in workers_of(server)} != first, 60,
             "the supervisor to replace the killed worker")
    assert server.api("agents")["items"] == []

    everyone = workers_of(server)
    server.stop(signal.SIGTERM)
    _gone, alive = psutil.wait_procs(everyone, timeout=30)
    assert not alive, f"workers left running: {alive}"
