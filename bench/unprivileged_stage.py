"""What the tests that drop root pay, once per session, to stage code `nobody` can read.

Prints the time to stage the interpreter, its standard library, policies/agent
and the agent extra's distributions (tests/unprivileged.py), the size and file
count of the staged folder, and the time of one `import agent.cli` run as
`nobody` from it. Needs root.
Run as root: PYTHONPATH=. .venv/bin/python bench/unprivileged_stage.py
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.unprivileged import stage

ROUNDS = 3


def main() -> int:
    if os.geteuid() != 0:
        print("needs root, to run code as nobody", file=sys.stderr)
        return 2
    stage_times, child_times = [], []
    for _ in range(ROUNDS):
        root = Path(tempfile.mkdtemp(prefix="warden-bench-stage-"))
        try:
            started = time.perf_counter()
            staged = stage(root)
            stage_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = staged.run("import agent.cli")
            child_times.append(time.perf_counter() - started)
            assert result.returncode == 0, result.stderr
            files = [path for path in root.rglob("*") if path.is_file()]
            size = sum(path.stat().st_size for path in files)
        finally:
            shutil.rmtree(root)
    print(f"stage (best of {ROUNDS}): {min(stage_times) * 1000:.0f} ms")
    print(f"staged folder: {size / 2**20:.0f} MiB in {len(files):,} files")
    print(f"`import agent.cli` as nobody (best of {ROUNDS}): {min(child_times) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
