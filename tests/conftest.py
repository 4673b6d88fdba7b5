"""Fixtures shared by every part's tests, and how the suite is split across workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unprivileged import pytest_itemcollected, unprivileged

__all__ = ["pytest_collection_modifyitems", "pytest_itemcollected", "unprivileged"]

# Tests that start processes under banned names, or run agents that scan every process
# on the machine, would see each other's fakes if two ran at once: under pytest-xdist
# (`make test` runs two workers) they all go to one worker, in order, while the store,
# API and policy tests, which share nothing but the CPU, spread over the others.
_MACHINE_WIDE = ("agent", "e2e")
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        part = Path(str(item.path)).resolve().relative_to(_HERE).parts[0]
        if part in _MACHINE_WIDE:
            item.add_marker(pytest.mark.xdist_group("machine"))
