"""Real receivers for SIEM tests: rsyslog on loopback ports, a Splunk HEC stand-in, and
parsers that read CEF back the way the CEF specification defines it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"

# rsyslog writes each message it parsed (RFC 5424 header fields and MSG) as one JSON line.
RSYSLOG_CONF = """\
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imtcp")
module(load="imudp")
template(name="fields" type="list" option.jsonf="on") {{
  property(outname="input" name="inputname" format="jsonf")
  property(outname="pri" name="pri" format="jsonf")
  property(outname="severity" name="syslogseverity" format="jsonf")
  property(outname="facility" name="syslogfacility" format="jsonf")
  property(outname="version" name="protocol-version" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="received") {{
  action(type="omfile" file="{out}" template="fields")
}}
input(type="imtcp" port="{tcp_port}" address="127.0.0.1" ruleset="received")
input(type="imudp" port="{udp_port}" address="127.0.0.1" ruleset="received")
"""


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


@dataclass
class Rsyslog:
    tcp_port: int
    udp_port: int
    out: Path
    process: subprocess.Popen[bytes]

    def received(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        lines = self.out.read_text(encoding="utf-8").splitlines()
        parsed = [json.loads(line) for line in lines if line.strip()]
        return [message for message in parsed if message["msgid"] != "probe"]

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        try:
            wait_until(lambda: len(self.received()) >= count, timeout,
                       f"{count} messages in {self.out}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received {self.received()}") from None
        return self.received()


def start_rsyslog(folder: Path, tcp_port: int | None = None) -> Iterator[Rsyslog]:
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "received.jsonl"
    tcp_port = tcp_port or free_port(socket.SOCK_STREAM)
    udp_port = free_port(socket.SOCK_DGRAM)
    conf = folder / "rsyslog.conf"
    conf.write_text(RSYSLOG_CONF.format(work=folder, out=out, tcp_port=tcp_port,
                                        udp_port=udp_port))
    process = subprocess.Popen([RSYSLOGD, "-n", "-f", str(conf), "-i", str(folder / "pid")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    daemon = Rsyslog(tcp_port, udp_port, out, process)
    try:
        wait_until(lambda: _accepts(tcp_port) or process.poll() is not None, 20,
                   "rsyslog to listen")
        assert process.poll() is None, process.communicate()[0].decode()
        # UDP has no handshake: it listens once a probe comes out the other end.
        probe = b"<14>1 2025-01-01T00:00:00Z probe test - probe - ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            def probed() -> bool:
                sock.sendto(probe, ("127.0.0.1", udp_port))
                return daemon.out.exists() and "probe" in daemon.out.read_text()
            wait_until(probed, 20, "rsyslog's UDP input")
        yield daemon
    finally:
        process.terminate()
        process.wait(20)
        if process.stdout is not None:
            process.stdout.close()


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# CEF (ArcSight "Implementing ArcSight CEF"): header fields split on unescaped |, where \| and
# \\ are the escapes; extension is key=value pairs, keys alphanumeric, values ending where
# the next " key=" begins; in values \= \\ \n \r are the escapes.
_HEADER_FIELD = re.compile(r"((?:[^|\\]|\\.)*)\|")
_EXTENSION_KEY = re.compile(r"(?:^| )([A-Za-z0-9_]+)=")
_VALUE_ESCAPES = {"\\": "\\", "=": "=", "n": "\n", "r": "\r"}


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    assert line.startswith("CEF:"), line
    header: list[str] = []
    position = 0
    for _ in range(7):
        match = _HEADER_FIELD.match(line, position)
        assert match, f"CEF header field {len(header) + 1} missing in {line!r}"
        header.append(re.sub(r"\\([|\\])", r"\1", match.group(1)))
        position = match.end()
    rest = line[position:]
    # A key starts after a space that is not part of a value's escape.
    keys = [m for m in _EXTENSION_KEY.finditer(rest) if not _escaped_at(rest, m.end() - 1)]
    extension: dict[str, str] = {}
    for index, match in enumerate(keys):
        end = keys[index + 1].start() if index + 1 < len(keys) else len(rest)
        raw = rest[match.end():end]
        assert not re.search(r"(?<!\\)(?:\\\\)*=", raw), f"unescaped = in {raw!r}"
        extension[match.group(1)] = re.sub(r"\\(.)", lambda m: _VALUE_ESCAPES[m.group(1)]
                                           if m.group(1) in _VALUE_ESCAPES else m.group(0), raw)
    return header, extension


def _escaped_at(text: str, index: int) -> bool:
    # True if the character at `index` is '=' preceded by an odd run of backslashes.
    backslashes = 0
    while index - 1 - backslashes >= 0 and text[index - 1 - backslashes] == "\\":
        backslashes += 1
    return backslashes % 2 == 1


@dataclass
class HecStandIn:
    """Splunk's HTTP Event Collector as its documentation describes it: POST
    /services/collector/event, "Authorization: Splunk <token>", a body of one or more JSON
    event objects each with an `event`; answers {"text": "Success", "code": 0}, 401 code 2
    without a token, 403 code 4 for a wrong one, 400 code 6 (invalid data format) or
    code 12 (event field is required), and 503 code 9 while "busy"."""

    token: str
    events: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0
    busy: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)
    url: str = ""

    def wait_for(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.events) >= count, timeout), \
                self.events
            return list(self.events)

    def answer(self, path: str, headers: Any, body: bytes) -> tuple[int, dict[str, Any]]:
        with self.changed:
            self.requests += 1
            self.changed.notify_all()
        if path != "/services/collector/event":
            return 404, {"text": "The requested URL was not found on this server.", "code": 404}
        auth = headers.get("Authorization") or ""
        if not auth:
            return 401, {"text": "Token is required", "code": 2}
        if auth != f"Splunk {self.token}":
            return 403, {"text": "Invalid token", "code": 4}
        if self.busy:
            return 503, {"text": "Server is busy", "code": 9}
        decoder = json.JSONDecoder()
        text, position, batch = body.decode("utf-8"), 0, []
        while position < len(text):
            while position < len(text) and text[position].isspace():
                position += 1
            if position == len(text):
                break
            try:
                event, position = decoder.raw_decode(text, position)
            except json.JSONDecodeError:
                return 400, {"text": "Invalid data format", "code": 6}
            if not isinstance(event, dict) or "event" not in event:
                return 400, {"text": "Event field is required", "code": 12}
            batch.append(event)
        with self.changed:
            self.events.extend(batch)
            self.changed.notify_all()
        return 200, {"text": "Success", "code": 0}


def serve_hec(hec: HecStandIn) -> tuple[ThreadingHTTPServer, threading.Thread]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status, answer = hec.answer(self.path, self.headers, body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hec.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server, thread
