"""`warden-agent run` with its installed-apps sensor stuck in open(2) of a FIFO (tests only).

`python -m tests.e2e.stuck_agent FIFO` runs what `warden-agent run` runs (the
same settings, logging and AgentDaemon); only the installed-apps source is
replaced by one whose scan blocks in the kernel until something opens FIFO for
writing, which the tests never do: the thread stays stuck in that system call
until the process ends, as it would on a dead NFS mount.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from agent.daemon import AgentDaemon
from agent.logs import configure_logging
from agent.scanning.sensor_set import SensorChoice, Sensors, WatchTiming
from agent.settings import load_settings
from policies.engine import Engine
from tests.agent.stuck_sensors import BlockedInstalled


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.e2e.stuck_agent FIFO", file=sys.stderr)
        return 2
    fifo = Path(argv[0])
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format, settings.log_file)

    def sensors(engine: Engine, choice: SensorChoice, privileged: bool,
                timing: WatchTiming) -> Sensors:
        built = Sensors.build(engine, dataclasses.replace(choice, installed=False), privileged,
                              timing)
        built.installed = BlockedInstalled(fifo=fifo)
        return built

    return AgentDaemon(settings, sensors=sensors).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
