"""Carry rendered records to a SIEM: RFC 5424 syslog (UDP, TCP, unix) or HTTP (Splunk HEC,
NDJSON). A sender renders a batch once (`prepare`), then `transmit` returns when all of
it arrived, or raises server.alerts.delivery's RetryableError (try again later) or
DeliveryError (never); retries transmit the same prepared bytes, not a fresh rendering."""

from __future__ import annotations

import datetime as dt
import json
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import requests

from server.alerts.delivery import DeliveryError, RetryableError
from server.alerts.syslog import parse_address
from server.alerts.webhook import parse_retry_after
from server.siem.records import SiemRecord, syslog_severity

FACILITY_LOCAL0 = 16
APP_NAME = "warden"
# Shorter and shorter values until a record fits a datagram (None: as it is).
_VALUE_LIMITS: tuple[int | None, ...] = (None, 256, 64, 16)
# Statuses an overloaded receiver answers; any other 4xx means the request is wrong.
_RETRYABLE_STATUS = frozenset({408, 425, 429})

# Renders one record as the MSG text, every value at most `limit` characters (None: all).
Render = Callable[[SiemRecord, int | None], str]


class BatchSender(Protocol):
    def prepare(self, records: Sequence[SiemRecord]) -> bytes | list[bytes]: ...

    def transmit(self, prepared: bytes | list[bytes]) -> None: ...

    def close(self) -> None: ...


def frame_rfc5424(record: SiemRecord, hostname: str, message: str) -> bytes:
    """`<PRI>1 TIMESTAMP HOSTNAME warden - MSGID - MSG`, MSG without a BOM: CEF and JSON
    parsers expect their first characters ("CEF:", "{") at the start of MSG."""
    pri = FACILITY_LOCAL0 * 8 + syslog_severity(record.severity)
    stamp = record.time.astimezone(dt.UTC).isoformat(timespec="microseconds")
    stamp = stamp.replace("+00:00", "Z")
    msgid = record.event_action[:32] or "-"
    host = "".join(ch for ch in hostname if 33 <= ord(ch) <= 126)[:255] or "-"
    return f"<{pri}>1 {stamp} {host} {APP_NAME} - {msgid} - {message}".encode()


class SyslogBatchSender:
    def __init__(self, address: str, render: Render, hostname: str | None = None,
                 timeout: float = 10.0, max_datagram_bytes: int = 8192) -> None:
        self.address = parse_address(address)
        self.max_datagram_bytes = max_datagram_bytes
        self._render = render
        self.hostname = hostname or socket.gethostname()
        self.timeout = timeout

    def message(self, record: SiemRecord) -> bytes:
        if self.address.transport == "tcp":
            return frame_rfc5424(record, self.hostname, self._render(record, None))
        # A datagram that is cut would be broken JSON or CEF: shorten the values instead.
        for limit in _VALUE_LIMITS:
            framed = frame_rfc5424(record, self.hostname, self._render(record, limit))
            if len(framed) <= self.max_datagram_bytes:
                return framed
        return framed

    def prepare(self, records: Sequence[SiemRecord]) -> bytes | list[bytes]:
        return [self.message(record) for record in records]

    def transmit(self, prepared: bytes | list[bytes]) -> None:
        messages = prepared if isinstance(prepared, list) else [prepared]
        try:
            if self.address.transport == "tcp":
                # One connection per batch; RFC 6587 octet counting frames each message.
                with socket.create_connection((self.address.host, self.address.port),
                                              timeout=self.timeout) as sock:
                    sock.sendall(b"".join(f"{len(m)} ".encode() + m for m in messages))
            elif self.address.transport == "udp":
                family, kind, proto, _, sockaddr = socket.getaddrinfo(
                    self.address.host, self.address.port, type=socket.SOCK_DGRAM)[0]
                with socket.socket(family, kind, proto) as sock:
                    sock.settimeout(self.timeout)
                    for message in messages:
                        sock.sendto(message, sockaddr)
            else:
                with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                    sock.settimeout(self.timeout)
                    sock.connect(self.address.path)
                    for message in messages:
                        sock.send(message)
        except OSError as exc:
            raise RetryableError(f"syslog {self.address}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: each batch uses its own socket."""


class HttpBatchSender:
    """POST a batch as one body: Splunk HEC's stacked JSON events, or NDJSON for ECS."""

    def __init__(self, url: str, body: Callable[[Sequence[SiemRecord]], bytes],
                 headers: dict[str, str], timeout: float = 10.0,
                 verify: str | bool = True) -> None:
        self.url = url
        self._body = body
        self._headers = headers
        self.timeout = timeout
        self._verify = verify
        self._session = requests.Session()

    def prepare(self, records: Sequence[SiemRecord]) -> bytes | list[bytes]:
        return self._body(records)

    def transmit(self, prepared: bytes | list[bytes]) -> None:
        body = b"".join(prepared) if isinstance(prepared, list) else prepared
        try:
            response = self._session.post(self.url, data=body,
                                          headers=self._headers, timeout=self.timeout,
                                          verify=self._verify)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise RetryableError(f"{self.url}: {exc.__class__.__name__}: {exc}") from exc
        except requests.RequestException as exc:
            raise DeliveryError(f"{self.url}: {exc}") from exc
        with response:
            status = response.status_code
            if status < 300:
                return
            # Splunk says why in {"text": ..., "code": ...}: worth the log line.
            message = f"{self.url} answered HTTP {status}: {response.text[:200]}"
            if status >= 500 or status in _RETRYABLE_STATUS:
                raise RetryableError(message, parse_retry_after(
                    response.headers.get("Retry-After"), dt.datetime.now(dt.UTC)))
            raise DeliveryError(message)

    def close(self) -> None:
        self._session.close()


def hec_headers(token: str) -> dict[str, str]:
    # The channel header is only needed when the token has indexer acknowledgement on;
    # sent always, it lets such a token accept our events too.
    return {"Authorization": f"Splunk {token}", "Content-Type": "application/json",
            "X-Splunk-Request-Channel": str(uuid.uuid4())}


def hec_event(record: SiemRecord, document: dict[str, object], index: str | None,
              source: str, sourcetype: str) -> str:
    """One HEC event (Splunk's /services/collector/event format): metadata and `event`."""
    envelope: dict[str, object] = {
        "time": round(record.time.timestamp(), 3),
        "host": record.finding.get("host") or "unknown",
        "source": source,
        "sourcetype": sourcetype,
        "event": document,
    }
    if index:
        envelope["index"] = index
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":"), default=str)
