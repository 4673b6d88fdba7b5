"""Giving memory the agent freed back to the machine.

glibc's allocator keeps what a program frees for its next allocations, and
returns it only from the very top of the heap. The agent's big jobs (the package
index, a policy switch, an installed-apps scan reading files) free megabytes
whose pages then sit in the agent's resident memory until the next big job,
pinned by whatever small object was allocated above them. `malloc_trim(0)`
hands every free page of every arena back (MADV_DONTNEED): a few milliseconds,
after each such job. Elsewhere (macOS, Windows, musl) there is no such call and
nothing is done.

glibc also gives each thread that allocates an arena of its own (up to eight per
core), each holding its own free memory. The agent's twenty-odd threads mostly
sleep; two arenas (the main thread's and one shared) cost them no waiting and
the agent 1.5 MiB less.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from collections.abc import Callable


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; False where that cannot be done."""
    trim = find_malloc_trim(sys.platform)
    if trim is None:
        return False
    trim(0)
    return True


# mallopt's parameter for the number of arenas (glibc's malloc.h).
_M_ARENA_MAX = -8
AGENT_ARENAS = 2


def limit_arenas(count: int = AGENT_ARENAS) -> bool:
    """Cap glibc's arenas at `count`, before the threads start; False where not glibc."""
    if find_malloc_trim(sys.platform) is None:  # the same test: Linux with glibc
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


@functools.cache
def find_malloc_trim(platform: str) -> Callable[[int], int] | None:
    """glibc's malloc_trim, on Linux with glibc; None elsewhere."""
    if not platform.startswith("linux"):
        return None
    try:
        # The program's own symbols: the C library it runs on, whatever its file name.
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # musl has no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim
