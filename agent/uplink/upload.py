"""Moving spooled events to the server: gzip batches, acknowledged only once committed.

Runs on its own thread inside `warden-agent run`. It never deletes an event the
server has not acknowledged: the spool is acked only with the ids the server
answered after its commit. One event the server refuses as invalid is found by
sending the batch one event at a time, and let go (logged, counted), so it
cannot hold back every event behind it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.uplink.backoff import Backoff
from agent.uplink.client import AgentClient, ClientError, Refused, RetryLater, Unauthorized
from agent.uplink.spool import Spool, SpoolError
from agent.uplink.sync import SyncStatus

log = logging.getLogger("warden.agent.upload")


class Uploader:
    """Moves spooled events to the server in gzip batches; acks only what was committed."""

    def __init__(
        self,
        client: AgentClient,
        spool: Spool,
        token: Callable[[], str | None],
        status: SyncStatus,
        batch_events: int = 500,
        idle_interval: float = 1.0,
        rng: random.Random | None = None,
        on_uploaded: Callable[[], object] = lambda: None,
    ) -> None:
        self.client = client
        # Told after each batch the server took, so `warden-agent status` is current.
        self._on_uploaded = on_uploaded
        self.spool = spool
        self._token = token
        self.status = status
        self.batch_events = batch_events
        self.idle_interval = idle_interval
        self._backoff = Backoff(base=1.0, cap=60.0, rng=rng)
        self.wake = threading.Event()

    def nudge(self) -> None:
        """The server answers again (a check-in went through): retry now, not after backoff."""
        self._backoff.reset()
        self.wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            delay = self.idle_interval
            try:
                if self.upload_once():
                    delay = 0.0  # more may be waiting
                self._backoff.reset()
            except RetryLater as exc:
                delay = self._backoff.next_delay(exc.seconds)
                self.status.last_error = str(exc)
            except Unauthorized as exc:
                # PolicySync re-enrolls; the events wait in the spool meanwhile.
                self.status.last_error = str(exc)
                delay = self._backoff.next_delay()
            except (ClientError, SpoolError) as exc:
                self.status.last_error = str(exc)
                log.error("upload failed: %s", exc)
                delay = self._backoff.next_delay()
            except Exception as exc:  # the thread must live, whatever went wrong
                self.status.last_error = str(exc)
                log.exception("upload failed unexpectedly")
                delay = self._backoff.next_delay()
            if delay:
                self.wake.wait(delay)
                self.wake.clear()

    def upload_once(self) -> bool:
        """Send one batch; True when a full batch went (so another may follow at once)."""
        token = self._token()
        if token is None:
            return False
        batch = self.spool.peek(limit=self.batch_events)
        if not batch:
            return False
        try:
            committed = self.client.post_events(token, batch)
        except Refused:
            # One event the server cannot take (an older agent's, a bug's) must not hold
            # back every event behind it: find it by sending them one at a time.
            committed = self._one_by_one(token, batch)
        # Answered ids are lower-case UUIDs; ours are too (uuid4 str), but be exact.
        sent = {event["id"]: event["id"] for event in batch}
        self.spool.ack(sent[i] for i in sent if i.lower() in committed)
        self.status.uploaded_events += len(committed)
        self.status.last_upload = time.time()
        try:
            self._on_uploaded()
        except OSError as error:
            log.warning("cannot record the upload: %s", error)
        return len(batch) >= self.batch_events

    def _one_by_one(self, token: str, batch: list[dict[str, Any]]) -> set[str]:
        """The ids to acknowledge: those the server took, and those it refused on their own
        (logged and counted: kept, they would be refused again forever)."""
        done: set[str] = set()
        for event in batch:
            event_id = str(event.get("id", "")).lower()
            try:
                done |= self.client.post_events(token, [event])
            except Refused as exc:
                log.error("the server refused event %s; it is let go: %s", event_id, exc)
                self.status.refused_events += 1
                done.add(event_id)
        return done
