"""Several server processes on one port: what `warden server run --workers N` starts.

uvicorn's supervisor binds the socket once, starts N worker processes that
accept on it (the kernel spreads connections among them), and starts a new
worker when one dies. Each worker builds its own app from the same flags the
command was given (the environment and config file they inherit do the
rest), so every worker has exactly the parent's settings. Nothing in a
worker's memory needs to agree with another's: rate limits and logouts live
in the database (server.throttling, server.dashboard.sessions), pruning is
serialised by the database (server.jobs.pruning), and each finding's alert goes
out from the one process that stored it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI

# Not WARDEN_*: it is not a setting, and ServerSettings must not read it.
FLAGS_ENV = "_WARDEN_SERVER_RUN_FLAGS"
# What `worker_app` is, for uvicorn's `--factory` import string.
FACTORY = "server.workers:worker_app"


def pass_flags(flags: dict[str, Any]) -> None:
    """Hand the command's flags to the workers it is about to start (they inherit the
    environment)."""
    os.environ[FLAGS_ENV] = json.dumps(
        {name: str(value) if isinstance(value, Path) else value
         for name, value in flags.items() if value is not None})


def worker_app() -> FastAPI:
    """The app of one worker process, from the flags `pass_flags` left."""
    from server.app import create_app
    from server.settings import ServerSettings

    flags = json.loads(os.environ.get(FLAGS_ENV, "{}"))
    return create_app(ServerSettings(**flags))
