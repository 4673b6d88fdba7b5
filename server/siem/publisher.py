"""Route every record to the destinations that subscribe to its stream, each in its format.

Built by server.app from `settings.siem_destinations`; fed after commit by the
agent API's hooks (`on_findings_stream`, `on_sensor_problem`). Each destination
has its own outbox and thread, so a destination that is down delays nobody else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from server.siem.cef import cef_line
from server.siem.destinations import SiemDestination
from server.siem.ecs import Observer, ecs_document, ecs_json
from server.siem.outbox import Outbox, OutcomeHook
from server.siem.records import (
    SiemRecord,
    action_record,
    finding_record,
    sensor_record,
)
from server.siem.senders import (
    BatchSender,
    HttpBatchSender,
    SyslogBatchSender,
    hec_event,
    hec_headers,
)

log = logging.getLogger(__name__)


class SiemPublisher:
    def __init__(
        self,
        destinations: Sequence[SiemDestination],
        version: str,
        *,
        hostname: str | None = None,
        app_names: Mapping[str, str] | None = None,
        on_outcome: OutcomeHook | None = None,
        timeout: float = 10.0,
        backoff_cap: float = 30.0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.observer = Observer(hostname=hostname or socket.gethostname(), version=version)
        self.version = version
        self._app_names = dict(app_names or {})
        self._clock = clock
        self.outboxes: dict[str, tuple[SiemDestination, Outbox]] = {}
        for destination in destinations:
            sender = self._sender(destination, timeout)
            outbox = Outbox(destination.name, sender, queue_size=destination.queue_size,
                            backoff_cap=backoff_cap, on_outcome=on_outcome)
            self.outboxes[destination.name] = (destination, outbox)

    def _sender(self, destination: SiemDestination, timeout: float) -> BatchSender:
        observer = self.observer
        if destination.format == "hec":
            assert destination.token is not None  # SiemDestination checks it
            index, source, sourcetype = (destination.index, destination.source,
                                         destination.sourcetype)

            def hec_body(records: Sequence[SiemRecord]) -> bytes:
                # HEC takes several events in one body, one JSON object after another.
                return "".join(hec_event(record, ecs_document(record, observer), index,
                                         source, sourcetype) for record in records).encode()

            return HttpBatchSender(destination.hec_url, hec_body,
                                   hec_headers(destination.token.get_secret_value()),
                                   timeout, _verify(destination))
        if destination.over_http:
            headers = {"Content-Type": "application/x-ndjson"}
            if destination.token is not None:
                headers["Authorization"] = f"Bearer {destination.token.get_secret_value()}"

            def ndjson(records: Sequence[SiemRecord]) -> bytes:
                return "".join(ecs_json(record, observer) + "\n" for record in records).encode()

            return HttpBatchSender(destination.address, ndjson, headers, timeout,
                                   _verify(destination))
        version = self.version

        def render(record: SiemRecord, limit: int | None) -> str:
            if destination.format == "cef":
                return cef_line(record, version, limit)
            return ecs_json(record, observer, limit)

        return SyslogBatchSender(destination.address, render, observer.hostname, timeout,
                                 destination.max_datagram_bytes)

    def start(self) -> None:
        for _, outbox in self.outboxes.values():
            outbox.start()

    def stop(self, timeout: float = 10.0) -> bool:
        stopped = True
        for name, (_, outbox) in self.outboxes.items():
            if not outbox.stop(timeout):
                log.warning("SIEM %s did not stop in time", name)
                stopped = False
        return stopped

    def flush(self, timeout: float | None = None) -> bool:
        return all(outbox.flush(timeout) for _, outbox in self.outboxes.values())

    def publish(self, record: SiemRecord) -> None:
        for destination, outbox in self.outboxes.values():
            if record.streams.intersection(destination.streams):
                outbox.submit(record)

    def on_findings_stream(self, items: list[dict[str, Any]]) -> None:
        """The agent API's hook: what one batch changed, as ingested (see server.api)."""
        for item in items:
            time = item.get("time") or self._clock()
            if item["type"] == "action":
                record = action_record(item["finding"], item["result"], item["event_id"],
                                       time, self._app_names)
            else:
                record = finding_record(item["type"], item["finding"], item.get("event_id"),
                                        time, self._app_names)
            self.publish(record)

    def on_sensor_problem(self, alert: dict[str, Any]) -> None:
        self.publish(sensor_record(alert, self._clock()))


def _verify(destination: SiemDestination) -> str | bool:
    return str(destination.ca_file) if destination.ca_file else True


def describe(destination: SiemDestination) -> str:
    """For the start-up log: what goes where (never the token)."""
    return json.dumps({"name": destination.name, "format": destination.format,
                       "address": destination.address, "streams": destination.streams})
