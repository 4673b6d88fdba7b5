"""`agent.service.windows.main` under the fake SCM, in its own process (a test helper).

Run as `python -m tests.e2e.scm_host`. Standard input: one service control code
per line, sent as the SCM would. Standard output: one JSON object per status
the service reported, and per control answered. Exits with main()'s exit code.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading

from agent.service.windows import main
from tests.agent.fake_scm import FakeScm, Reported

_print_lock = threading.Lock()


def emit(record: dict[str, int]) -> None:
    with _print_lock:
        print(json.dumps(record), flush=True)


def report(status: Reported) -> None:
    emit(dataclasses.asdict(status))


def forward_controls(scm: FakeScm) -> None:
    for line in sys.stdin:
        code = int(line)
        emit({"control": code, "answer": scm.control(code)})


if __name__ == "__main__":
    fake_scm = FakeScm(on_status=report)
    threading.Thread(target=forward_controls, args=(fake_scm,), daemon=True).start()
    sys.exit(main([], load_scm=fake_scm.api))
