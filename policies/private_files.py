"""Writing a file only its owner may read, in one step: the agent's identity, cached policy
and exceptions, and the server's signing key all go through here.

Shared by both sides (the agent never imports server code), so it lives with the policy
language rather than in either of them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data` atomically, readable by the owner only: a reader sees the
    old content or the new, never a part, and never a moment of wider permissions
    (mkstemp creates the file 0600; a missing parent is created 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
