"""Giving freed memory back to the machine (agent/host/memory.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.host.memory import find_malloc_trim, release_free_memory

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim: Linux")
def test_on_linux_with_glibc_the_free_pages_are_handed_back() -> None:
    freed = [bytearray(200_000) for _ in range(50)]
    del freed
    assert find_malloc_trim(sys.platform) is not None
    assert release_free_memory() is True


# A fresh process (this one has its arenas already): cap or not, four live threads
# allocate, then glibc's own report (malloc_info) says how many arenas there are.
ARENAS = """
import ctypes, sys, tempfile, threading
from agent.host.memory import limit_arenas
if sys.argv[1] == "cap":
    assert limit_arenas(2)
def allocate():
    kept.append(bytes(4096))  # past pymalloc's 512 bytes: glibc's malloc, in this thread
    together.wait()  # all alive at once: an ended thread's arena goes to the next one
kept = []
together = threading.Barrier(4)
threads = [threading.Thread(target=allocate) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile() as report:
    stream = libc.fopen(report.name.encode(), b"w")
    libc.malloc_info(0, stream)
    libc.fclose(stream)
    print(open(report.name).read().count("<heap nr="))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas: Linux")
def test_the_arena_cap_keeps_threads_to_two_arenas() -> None:
    def arenas(mode: str) -> int:
        run = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True,
                             text=True, check=True, env={**os.environ, "PYTHONPATH": ROOT})
        return int(run.stdout)

    assert arenas("cap") == 2
    assert arenas("none") > 2


@pytest.mark.parametrize("platform", ["darwin", "win32"])
def test_elsewhere_nothing_is_done(platform: str) -> None:
    assert find_malloc_trim(platform) is None
