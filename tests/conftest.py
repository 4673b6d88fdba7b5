"""Fixtures shared by every part's tests, and how the suite splits across processes.

`make test` runs the suite on several pytest-xdist workers (`--dist loadgroup`).
Server and policy tests are independent of each other and of the machine: each
gets its own SQLite file or PostgreSQL schema, its own data dir and ports the
kernel picks. Agent and whole-system tests are not: they start processes named
like banned apps and scan the machine's whole process table, so two of them
side by side would see each other's processes. Those all go to one worker, in
their usual order (the xdist group "machine"). Tests marked `exclusive` stop a
service every other test shares (PostgreSQL), so `make test` runs them alone
after the rest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unprivileged import pytest_itemcollected, unprivileged

__all__ = ["pytest_collection_modifyitems", "pytest_itemcollected", "unprivileged"]

TESTS = Path(__file__).parent
# Folders and files whose tests touch the machine as a whole.
MACHINE_WIDE = (TESTS / "agent", TESTS / "e2e", TESTS / "test_privilege_drops.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path)
        if any(path == place or place in path.parents for place in MACHINE_WIDE):
            item.add_marker(pytest.mark.xdist_group("machine"))
