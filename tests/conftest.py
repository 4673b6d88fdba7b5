"""Fixtures shared by every part's tests."""

from tests.unprivileged import pytest_itemcollected, unprivileged

__all__ = ["pytest_itemcollected", "unprivileged"]
