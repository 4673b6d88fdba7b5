"""Deliver an alert as an RFC 5424 syslog message over UDP, TCP or a unix socket.

Addresses: ``udp://host[:port]``, ``tcp://host[:port]`` (RFC 6587 octet-counting
framing) and ``unix:///dev/log`` (a datagram socket, as rsyslog and journald
offer). Each message opens its own socket: alerts are rare, and a fresh socket
recovers by itself from a restarted syslog daemon.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from server.alerts.delivery import RetryableError
from server.alerts.summary import summary_text
from server.untrusted_text import one_line

FACILITY_LOCAL0 = 16
SEVERITY_WARNING = 4
DEFAULT_PORT = 514
# Private enterprise number 32473 is the one RFC 5612 reserves for documentation
# and examples; an organisation with its own number can change it here.
SD_ID = "warden@32473"
# RFC 5424 §6.1: receivers SHOULD accept 2048 octets; longer datagrams may be cut
# or dropped on the way, so we shorten the free text ourselves.
MAX_DATAGRAM_BYTES = 2048
# RFC 5424 §6.4: a UTF-8 MSG starts with a byte order mark.
_BOM = "\ufeff"

Transport = Literal["udp", "tcp", "unix"]


@dataclass(frozen=True)
class SyslogAddress:
    transport: Transport
    host: str = ""
    port: int = DEFAULT_PORT
    path: str = ""

    def __str__(self) -> str:
        if self.transport == "unix":
            return f"unix://{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}://{host}:{self.port}"


def parse_address(text: str) -> SyslogAddress:
    parts = urlsplit(text)
    if parts.scheme == "unix":
        path = parts.netloc + parts.path
        if not path:
            raise ValueError(f"syslog address {text!r} needs a socket path: unix:///dev/log")
        return SyslogAddress("unix", path=path)
    if parts.scheme in ("udp", "tcp"):
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError as exc:
            raise ValueError(f"syslog address {text!r}: {exc}") from exc
        if not parts.hostname:
            raise ValueError(f"syslog address {text!r} needs a host: {parts.scheme}://HOST:PORT")
        return SyslogAddress(parts.scheme, host=parts.hostname, port=port)  # type: ignore[arg-type]
    raise ValueError(f"syslog address {text!r} must start with udp://, tcp:// or unix://")


def format_rfc5424(
    finding: Mapping[str, Any],
    text: str,
    hostname: str,
    timestamp: dt.datetime,
    max_bytes: int | None = None,
) -> bytes:
    """`<132>1 TIMESTAMP HOSTNAME warden - deny-finding [warden@32473 ...] BOM text`."""
    pri = FACILITY_LOCAL0 * 8 + SEVERITY_WARNING
    stamp = timestamp.astimezone(dt.UTC).isoformat(timespec="microseconds")
    stamp = stamp.replace("+00:00", "Z")
    msgid = _header_token(f"sensor-{finding.get('state') or 'unknown'}"
                          if finding.get("kind") == "sensor"
                          else f"{finding.get('verdict') or 'unknown'}-finding", 32)
    params = {
        "app": finding.get("app"),
        "host": finding.get("host"),
        "sensor": finding.get("sensor"),
        "verdict": finding.get("verdict"),
        "state": finding.get("state"),
        "finding_id": finding.get("id"),
        "agent_id": finding.get("agent_id"),
    }
    data = " ".join(f'{name}="{_param_value(value)}"' for name, value in params.items()
                    if value is not None)
    head = (f"<{pri}>1 {stamp} {_header_token(hostname, 255)} warden - {msgid} "
            f"[{SD_ID}{' ' if data else ''}{data}] ").encode()
    body = (_BOM + text).encode()
    if max_bytes is not None and len(head) + len(body) > max_bytes:
        # Cut on a character boundary, never inside a UTF-8 sequence.
        body = body[: max(0, max_bytes - len(head))].decode("utf-8", "ignore").encode()
    return head + body


def _header_token(value: str, limit: int) -> str:
    # Header fields are printable US-ASCII without spaces; "-" is the nil value.
    token = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return token or "-"


def _param_value(value: object) -> str:
    # RFC 5424 §6.3.3: '"', '\' and ']' are escaped with a backslash. Controls come
    # first, in the visible form of server.untrusted_text (whose backslash is escaped too).
    text = one_line(str(value))
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


class SyslogSender:
    name = "syslog"

    def __init__(
        self,
        address: str,
        hostname: str | None = None,
        timeout: float = 10.0,
        app_names: Mapping[str, str] | None = None,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.address = parse_address(address)
        self.hostname = hostname or socket.gethostname()
        self.timeout = timeout
        self._app_names = dict(app_names or {})
        self._now = now

    def message(self, finding: Mapping[str, Any]) -> bytes:
        limit = None if self.address.transport == "tcp" else MAX_DATAGRAM_BYTES
        return format_rfc5424(finding, summary_text(finding, self._app_names), self.hostname,
                              self._now(), limit)

    def send(self, finding: dict[str, Any]) -> None:
        message = self.message(finding)
        try:
            if self.address.transport == "unix":
                self._send_unix(message)
            elif self.address.transport == "udp":
                self._send_udp(message)
            else:
                self._send_tcp(message)
        except OSError as exc:
            # A missing or restarting daemon, an unreachable network: all transient.
            raise RetryableError(f"syslog {self.address}: {exc}") from exc

    def _send_unix(self, message: bytes) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(self.address.path)
            sock.send(message)

    def _send_udp(self, message: bytes) -> None:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            self.address.host, self.address.port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(self.timeout)
            sock.sendto(message, sockaddr)

    def _send_tcp(self, message: bytes) -> None:
        # RFC 6587 §3.4.1 octet counting: "LENGTH SP MESSAGE", safe for any content.
        with socket.create_connection((self.address.host, self.address.port),
                                      timeout=self.timeout) as sock:
            sock.sendall(f"{len(message)} ".encode() + message)

    def close(self) -> None:
        """Nothing to release: each message uses its own socket."""
