"""Fixtures shared by every part's tests, and how the suite splits across processes.

`make test` runs the suite on several pytest-xdist workers (`--dist loadgroup`).
Server and policy tests are independent of each other and of the machine: each
gets its own SQLite file or PostgreSQL schema, its own data dir and ports the
kernel picks. Agent and whole-system tests are not by themselves: they start
processes named like banned apps and scan the machine's whole process table, so
two of them side by side would see (and end) each other's processes. As root,
each worker therefore runs in a PID namespace of its own, with its own /proc
(tests/pidns_init.py): its agents see only its processes, and those tests spread
over the workers like the rest. Where that is not possible (not root, no
`unshare`, or WARDEN_TEST_SHARED_PIDS=1) they all go to one worker, in their usual
order (the xdist group "machine"). Tests marked `exclusive` stop a service every
other test shares (PostgreSQL), so `make test` runs them alone after the rest.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.pidns_init import MARKER as IN_PRIVATE_PID_NAMESPACE
from tests.unprivileged import pytest_itemcollected, unprivileged

__all__ = ["pytest_collection_modifyitems", "pytest_configure", "pytest_itemcollected",
           "pytest_make_parametrize_id", "unprivileged"]

TESTS = Path(__file__).parent
# Folders and files whose tests touch the machine as a whole...
MACHINE_WIDE = (TESTS / "agent", TESTS / "e2e", TESTS / "test_privilege_drops.py")
# ...but for these modules, which start no agent on the whole machine and no process
# named like a banned app (they read planted files, parse, or run servers alone).
# A module added here must stay so: it then runs beside agents that end banned apps.
ON_THEIR_OWN = frozenset({
    "agent/test_dns_table.py", "agent/test_fuzz_sensors.py", "agent/test_hostile_files.py",
    "agent/test_install_watch.py", "agent/test_installed_linux.py",
    "agent/test_installed_macos.py", "agent/test_installed_windows.py",
    "agent/test_key_trust.py", "agent/test_machine_key.py", "agent/test_notify_command.py",
    "agent/test_ownership.py", "agent/test_ownership_cli.py", "agent/test_ownership_windows.py",
    "agent/test_safe_reads.py", "agent/test_service_uninstall.py", "agent/test_spool.py",
    "agent/test_state.py", "agent/test_state_activation.py", "agent/test_sync_failures.py",
    "agent/test_winservice.py", "e2e/test_shared_state.py", "e2e/test_workers.py",
})


UNSHARE = ("unshare", "--pid", "--fork", "--mount-proc", "--kill-child", "--")


def pytest_configure(config: pytest.Config) -> None:
    """On the controller of `pytest -n N`: start each worker in a PID namespace of its own
    (module docstring), when this machine allows it."""
    workers = getattr(config.option, "tx", None)
    if hasattr(config, "workerinput") or not workers or set(workers) != {"popen"}:
        return  # a worker itself, no xdist, or a --tx the caller chose
    if not _private_pid_namespaces():
        return
    python = shlex.join([*UNSHARE, sys.executable, str(TESTS / "pidns_init.py")])
    config.option.tx = [f"popen//python={python}"] * len(workers)


def _private_pid_namespaces() -> bool:
    if os.environ.get("WARDEN_TEST_SHARED_PIDS") == "1" or os.geteuid() != 0:
        return False
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run([*UNSHARE, "true"], capture_output=True, check=False)
    return probe.returncode == 0


# First: pytest-xdist's own hook (on each worker) reads these marks to name the groups.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.environ.get(IN_PRIVATE_PID_NAMESPACE) == "1":
        return  # this worker's processes are its own: no group needed
    for item in items:
        path = Path(item.path)
        if path.relative_to(TESTS).as_posix() in ON_THEIR_OWN:
            continue
        if any(path == place or place in path.parents for place in MACHINE_WIDE):
            item.add_marker(pytest.mark.xdist_group("machine"))


# Parts of a test id that differ from one collection to the next: every pytest-xdist
# worker collects on its own and must find the same ids.
_UNSTABLE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
                       r"|\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?")


def pytest_make_parametrize_id(config: pytest.Config, val: Any, argname: str) -> str | None:
    text = val.decode("utf-8", "replace") if isinstance(val, bytes) else val
    if isinstance(text, str) and _UNSTABLE.search(text):
        return _UNSTABLE.sub("*", text)
    return None
