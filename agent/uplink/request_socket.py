"""The local door for people at the machine: `warden-agent request-exception`.

The running agent listens on a Unix socket any local user may connect to (0666 in
a 0755 folder the agent owns). A client sends one JSON line `{"app", "days",
"reason"}`; the agent learns who is asking from the kernel (SO_PEERCRED: the
peer's uid, which the client cannot choose), checks the request, and puts an
`exception_requested` event in its spool: it reaches the server like any event,
even after an outage. The answer is one JSON line: `{"ok": true, "request_id"}` or
`{"ok": false, "error"}`.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.scanning.findings import format_time, utc_now
from policies.exceptions import MAX_EXCEPTION_DAYS, ExceptionRequestInfo

log = logging.getLogger("warden.agent.requests")
MAX_REQUEST_BYTES = 8192
# A person asks now and then; a loop asking thousands of times must not fill the spool.
PER_USER_PER_HOUR = 10
_TIMEOUT = 5.0


class RequestRefused(Exception):
    pass


class RequestServer:
    def __init__(self, path: Path, submit: Callable[[dict[str, Any]], None],
                 known_app: Callable[[str], bool],
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._submit = submit
        self._known_app = known_app
        self._monotonic = monotonic
        self._asked: dict[int, collections.deque[float]] = collections.defaultdict(
            collections.deque)
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; a folder that someone else could swap the socket in is refused."""
        folder = self.path.parent
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.error("not listening for exception requests: %s must be owned by this "
                      "agent's user and writable by nobody else (chmod 755 %s)", folder, folder)
            return
        folder.chmod(0o755)
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()  # left by an agent that did not stop cleanly
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.path))
            # Any local user may ask; who asked is what SO_PEERCRED says, not the request.
            self.path.chmod(0o666)
            listener.listen(16)
        except OSError as exc:
            listener.close()
            log.error("not listening for exception requests on %s: %s", self.path, exc)
            return
        self._socket = listener
        self._thread = threading.Thread(target=self._accept, name="requests", daemon=True)
        self._thread.start()
        log.info("listening for exception requests on %s", self.path)

    def close(self) -> None:
        listener, self._socket = self._socket, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _accept(self) -> None:
        while self._socket is not None:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return  # closed
            with connection:
                connection.settimeout(_TIMEOUT)
                try:
                    answer = {"ok": True, "request_id": self._handle(connection)}
                except RequestRefused as exc:
                    answer = {"ok": False, "error": str(exc)}
                except Exception as exc:  # one bad client must not end the door
                    log.exception("exception request failed")
                    answer = {"ok": False, "error": f"the agent could not take it: {exc}"}
                with contextlib.suppress(OSError):
                    connection.sendall(json.dumps(answer).encode() + b"\n")

    def _handle(self, connection: socket.socket) -> str:
        uid = peer_uid(connection)
        data = _read_line(connection)
        try:
            body = json.loads(data)
        except ValueError as exc:
            raise RequestRefused("the request is not JSON") from exc
        if not isinstance(body, dict):
            raise RequestRefused("the request is not a JSON object")
        app = body.get("app")
        if not isinstance(app, str) or not self._known_app(app):
            raise RequestRefused(f"unknown app {app!r}: give the app's id, e.g. telegram")
        try:
            info = ExceptionRequestInfo.model_validate(
                {"app": app, "days": body.get("days"),
                 "reason": str(body.get("reason") or "").strip(), "user": user_name(uid),
                 "uid": uid})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
                                 for error in exc.errors())
            raise RequestRefused(f"{problems} (days: 1 to {MAX_EXCEPTION_DAYS}; a reason "
                                 "is needed)") from exc
        self._limit(uid)
        event_id = str(uuid.uuid4())
        self._submit({"id": event_id, "type": "exception_requested",
                      "time": format_time(utc_now()), "request": info.model_dump(mode="json")})
        log.info("exception request %s from %s: %s for %d days", event_id, info.user, app,
                 info.days)
        return event_id

    def _limit(self, uid: int | None) -> None:
        key = -1 if uid is None else uid
        now = self._monotonic()
        asked = self._asked[key]
        while asked and asked[0] < now - 3600:
            asked.popleft()
        if len(asked) >= PER_USER_PER_HOUR:
            raise RequestRefused(f"at most {PER_USER_PER_HOUR} requests an hour; try later")
        asked.append(now)


def _read_line(connection: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data:
        try:
            chunk = connection.recv(4096)
        except TimeoutError as exc:
            raise RequestRefused("the request did not arrive in time") from exc
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST_BYTES:
            raise RequestRefused(f"the request is over {MAX_REQUEST_BYTES} bytes")
    return data.split(b"\n", 1)[0]


def peer_uid(connection: socket.socket) -> int | None:
    """The connecting process's uid, from the kernel (Linux); None where unknown."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    raw = connection.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def user_name(uid: int | None) -> str:
    if uid is None:
        return "unknown"
    try:
        import pwd  # POSIX only: where SO_PEERCRED gave a uid

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def send_request(path: Path, app: str, days: int, reason: str,
                 timeout: float = 10.0) -> dict[str, Any]:
    """The client: one request, the agent's answer (OSError when no agent listens)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        client.sendall(json.dumps({"app": app, "days": days, "reason": reason}).encode()
                       + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = client.recv(4096)
            if not chunk:
                break
            data += chunk
    answer = json.loads(data or b"{}")
    if not isinstance(answer, dict):
        raise ValueError("the agent's answer is not a JSON object")
    return answer
