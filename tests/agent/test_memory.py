"""Giving freed memory back to the machine (agent/host/memory.py)."""

from __future__ import annotations

import sys

import pytest

from agent.host.memory import find_malloc_trim, release_free_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux")
def test_on_linux_with_glibc_the_free_pages_are_handed_back() -> None:
    freed = [bytearray(200_000) for _ in range(50)]
    del freed
    assert find_malloc_trim(sys.platform) is not None
    assert release_free_memory() is True


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_elsewhere_nothing_is_done(platform: str) -> None:
    assert find_malloc_trim(platform) is None
