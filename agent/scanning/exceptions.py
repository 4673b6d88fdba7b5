"""Which exceptions hold now, by this machine's own clock, and telling the person about them.

The keeper holds the verified exceptions document (agent.uplink.exceptions) and, on
its own thread, wakes when something is due: an exception lapses (the engine is
rebuilt without it, so the ban applies again even with the server unreachable), an
exception lapses within a day (the person is told), or a new document arrived (its
answers to requests are told once). What was told is kept in the state dir, so a
restart does not tell it again.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from agent.responding.notify_types import Notice, Notifier
from policies.exceptions import WARN_BEFORE, ExceptionsDocument, in_force, next_change
from policies.private_files import write_private

log = logging.getLogger("warden.agent.exceptions")
TOLD_FILE = "exceptions-told.json"
# The longest sleep: a wall clock set forward (or a suspended laptop) is noticed this soon.
MAX_SLEEP = 30.0

Clock = Callable[[], dt.datetime]


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ExceptionKeeper:
    def __init__(
        self,
        notifier: Notifier,
        on_change: Callable[[frozenset[str]], None],
        state_dir: Path,
        app_name: Callable[[str], str] = lambda app: app,
        clock: Clock = _utc_now,
        document: ExceptionsDocument | None = None,
    ) -> None:
        self._notifier = notifier
        self._on_change = on_change
        self._state_dir = state_dir
        self._app_name = app_name
        self._clock = clock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.document = document
        self._told = self._load_told()
        self._applied = self.granted()

    # -- what holds ---------------------------------------------------------------

    def granted(self) -> frozenset[str]:
        """The apps excepted on this machine now."""
        document = self.document
        if document is None:
            return frozenset()
        return frozenset(in_force(document.exceptions, self._clock()))

    def take(self, document: ExceptionsDocument) -> None:
        """A newly verified document (from the sync thread): applied at once."""
        with self._lock:
            self.document = document
        self.tick()

    def wake(self) -> None:
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delay = self.tick()
            except Exception:  # the thread must live: it is what ends exceptions on time
                log.exception("checking exceptions failed")
                delay = MAX_SLEEP
            self._wake.wait(delay)
            self._wake.clear()

    def tick(self) -> float:
        """Apply what is due now; the seconds until the next thing is due (capped)."""
        with self._lock:
            now = self._clock()
            document = self.document
            granted = self.granted()
            if granted != self._applied:
                lapsed = self._applied - granted
                if lapsed:
                    log.warning("exception lapsed for %s: the policy applies again",
                                ", ".join(sorted(lapsed)))
                self._applied = granted
                self._on_change(granted)
            if document is None:
                return MAX_SLEEP
            self._tell_answers(document)
            self._warn_lapsing(document, now)
            due = next_change(document.exceptions, now)
        if due is None:
            return MAX_SLEEP
        return min(MAX_SLEEP, max(0.05, (due - now).total_seconds()))

    # -- telling the person -------------------------------------------------------

    def _tell_answers(self, document: ExceptionsDocument) -> None:
        for answer in document.answers:
            key = f"answer:{answer.request_id}"
            if key in self._told:
                continue
            name = self._app_name(answer.app)
            if answer.decision == "approved" and answer.until is not None:
                title = f"{name} is allowed on this computer"
                body = f"Your request was approved until {_local(answer.until)}."
            else:
                title = f"Your request to use {name} was declined"
                body = "An administrator declined your request."
            if answer.comment:
                body = f"{body} {answer.comment}"
            self._tell(key, Notice(title=title, body=body, app_id=answer.app,
                                   alternative_id=None, alternative_name=None,
                                   alternative_link=None, install_hint=None,
                                   user=answer.user or None))

    def _warn_lapsing(self, document: ExceptionsDocument, now: dt.datetime) -> None:
        for exception in document.exceptions:
            key = f"lapsing:{exception.id}:{exception.until.isoformat()}"
            if key in self._told or not (exception.until - WARN_BEFORE <= now < exception.until):
                continue
            name = self._app_name(exception.app)
            self._tell(key, Notice(
                title=f"Your exception for {name} ends soon",
                body=f"{name} is allowed on this computer until {_local(exception.until)}; "
                     "after that it is not. Ask your administrator if you still need it.",
                app_id=exception.app, alternative_id=None, alternative_name=None,
                alternative_link=None, install_hint=None))

    def _tell(self, key: str, notice: Notice) -> None:
        result = self._notifier.notify(notice)
        if not result.ok and not result.suppressed:
            log.warning("could not tell the user %r: %s", notice.title, result.detail)
        self._told.add(key)
        self._save_told()

    def _load_told(self) -> set[str]:
        try:
            told = json.loads((self._state_dir / TOLD_FILE).read_bytes())
        except (OSError, ValueError):
            return set()
        return {item for item in told if isinstance(item, str)} if isinstance(told, list) \
            else set()

    def _save_told(self) -> None:
        try:
            write_private(self._state_dir / TOLD_FILE, json.dumps(sorted(self._told)).encode())
        except OSError as exc:
            log.warning("cannot save which notices were given: %s", exc)


def _local(moment: dt.datetime) -> str:
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z")
