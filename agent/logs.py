"""Where the agent's log goes: standard error, or a rotating file (the Windows service)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5

_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_JSON = ('{"time":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s",'
         '"message":"%(message)s"}')


def configure_logging(level: str, log_format: str, log_file: Path | None) -> None:
    """Send the root logger to `log_file` (rotated, 10 MB x 5) or to standard error.

    A log file that cannot be opened must not keep the agent from running:
    it logs to standard error instead and says why.
    """
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    problem = None
    if log_file is not None:
        # Here: logging.handlers brings pickle and sockets, for the Windows service only.
        from logging.handlers import RotatingFileHandler

        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            handler = RotatingFileHandler(log_file, maxBytes=LOG_FILE_BYTES,
                                          backupCount=LOG_FILE_BACKUPS, encoding="utf-8")
        except OSError as exc:
            problem = f"cannot open the log file {log_file}: {exc}; logging to standard error"
    handler.setFormatter(logging.Formatter(_JSON if log_format == "json" else _TEXT))
    logging.basicConfig(level=level, handlers=[handler])
    if problem:
        logging.getLogger("warden.agent").warning(problem)
