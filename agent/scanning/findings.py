"""Finding lifecycle: opened when first seen, resolved when its cause goes away,
and opened again (the same key) when a new policy says something else about it.

A finding's key (from the engine) is `app|sensor|identity`, where identity
names the thing seen: a process (pid + start time), an install, a connection.
The tracker keeps open findings per sensor, so a process tick can never
resolve an installed-app finding, and turns each sensor's news into events.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any, Literal

from policies.engine import Finding
from policies.vocabulary import SENSORS, Sensor

EventKind = Literal["opened", "resolved"]
# What the policy says about a finding, as opposed to what was seen.
POLICY_TERMS = ("verdict", "action", "mode", "alternative", "message")


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def format_time(moment: dt.datetime) -> str:
    """RFC 3339 / ISO-8601 in UTC with a Z, to the millisecond."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def identity_of(key: str) -> str:
    return key.split("|", 2)[2]


def finding_dict(finding: Finding) -> dict[str, Any]:
    """The finding as JSON-ready data, with its pid on top when it has one."""
    data = finding.as_dict()
    pid = finding.evidence.get("pid")
    if pid is not None:
        # Process (and owned connection) findings carry the pid on top, for
        # whoever acts on them: a notifier, an enforcer, a test.
        data["pid"] = pid
    return data


def finding_event(kind: EventKind, finding: Finding, moment: dt.datetime) -> dict[str, Any]:
    return {"event": kind, "time": format_time(moment), **finding_dict(finding)}


class FindingTracker:
    def __init__(self, clock: Callable[[], dt.datetime] = utc_now) -> None:
        self._clock = clock
        self._open: dict[Sensor, dict[str, Finding]] = {sensor: {} for sensor in SENSORS}

    def replace(self, sensor: Sensor, findings: Iterable[Finding]) -> list[dict[str, Any]]:
        """`findings` is everything `sensor` sees now; what is missing has resolved."""
        current = {finding.key: finding for finding in findings}
        known = self._open[sensor]
        resolved = [finding for key, finding in known.items() if key not in current]
        opened = [finding for key, finding in current.items()
                  if key not in known or _restated(known[key], finding)]
        return self._apply(sensor, opened, resolved)

    def update(
        self, sensor: Sensor, new: Iterable[Finding], gone: Iterable[str]
    ) -> list[dict[str, Any]]:
        """A delta: findings of things just seen, and identities that went away.

        An identity may be in both (a process re-read after exec); a finding it
        still has stays open, one it lost resolves.
        """
        incoming = {finding.key: finding for finding in new}
        gone_identities = set(gone)
        known = self._open[sensor]
        resolved = [finding for key, finding in known.items()
                    if key not in incoming and identity_of(key) in gone_identities]
        opened = [finding for key, finding in incoming.items()
                  if key not in known or _restated(known[key], finding)]
        return self._apply(sensor, opened, resolved)

    def open_findings(self, sensor: Sensor | None = None) -> list[Finding]:
        """A snapshot; safe to take from another thread (e.g. a status reporter)."""
        found: list[Finding] = []
        for name in SENSORS if sensor is None else (sensor,):
            # list.extend copies a dict view in one C call, under the GIL: no
            # "dictionary changed size" however busy the watch loop is.
            found.extend(self._open[name].values())
        return found

    def seed(self, findings: Iterable[Finding]) -> None:
        """Restore findings a previous run left open (the agent restarted).

        The first full scan after a restart then resolves those whose cause went
        away while the agent was down, and does not open the others again.
        """
        for finding in findings:
            self._open[finding.sensor][finding.key] = finding

    def open_pids(self, sensor: Sensor = "process") -> set[int]:
        """Pids behind open findings: the ones worth checking closely every tick."""
        return {pid for finding in self._open[sensor].values()
                if isinstance(pid := finding.evidence.get("pid"), int)}

    def _apply(
        self, sensor: Sensor, opened: list[Finding], resolved: list[Finding]
    ) -> list[dict[str, Any]]:
        if not opened and not resolved:
            return []
        moment = self._clock()
        known = self._open[sensor]
        events = []
        for finding in resolved:
            del known[finding.key]
            events.append(finding_event("resolved", finding, moment))
        for finding in opened:
            event = finding_event("opened", finding, moment)
            if finding.key in known:
                # The same sighting on new terms (a policy activated or rolled back, an
                # exec): an update, not the user launching the app again.
                event["restated"] = True
            known[finding.key] = finding
            events.append(event)
        return events


def _restated(before: Finding, now: Finding) -> bool:
    """Whether a finding still open is now seen on other terms, or as another program.

    The embedded default (audit, notify) judged a Telegram that still runs when
    the server's policy (enforce, terminate) arrives: the finding is opened
    again on the new terms, so the agent acts on them and the server, which
    takes a repeated opening as an update, shows them. Likewise when a process
    re-read after an exec (or after a read torn by one) turns out to run another
    executable: the server gets the evidence as it is now.
    """
    if any(getattr(before, name) != getattr(now, name) for name in POLICY_TERMS):
        return True
    return before.sensor == "process" and before.evidence.get("exe") != now.evidence.get("exe")
