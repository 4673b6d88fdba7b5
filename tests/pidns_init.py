"""PID 1 of a pytest-xdist worker's private PID namespace (see tests/conftest.py).

The controller starts each worker as
``unshare --pid --fork --mount-proc --kill-child -- python tests/pidns_init.py -u -c …``:
this script is then process 1 of a namespace with its own /proc, so the worker's
agents see, and may end, only the worker's own processes. Process 1 inherits every
orphan in its namespace (a daemon's grandchild, a process an agent left behind),
so this one stays small: it runs the worker as its child, reaps whatever else
exits, passes on the signals a worker is stopped with, and leaves with the
worker's exit status. When it leaves the kernel ends the rest of the namespace.
"""

from __future__ import annotations

import os
import signal
import sys

MARKER = "WARDEN_TEST_PID_NAMESPACE"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def main() -> int:
    os.environ[MARKER] = "1"
    worker = os.fork()
    if worker == 0:
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    for signum in FORWARDED:
        signal.signal(signum, lambda received, _frame: os.kill(worker, received))
    while True:
        pid, status = os.wait()  # any child: the worker, or an orphan to reap
        if pid == worker:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
