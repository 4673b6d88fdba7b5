"""Impact preview: what activating a policy version would change for the fleet, before it does.

For every agent that is not revoked, each open finding's evidence is turned
back into the observation the agent made (a process, an installed app, a
connection) and run through the policy engine with the agent's host context
(OS, hostname, group) — the engine the agents themselves run. A finding
whose verdict would differ is a change (deny -> allow, alert -> deny, deny
-> excepted, deny -> none when the new policy has no rule for the app); an
app the new policy denies or alerts on that matches a recorded observation
the agent has no finding for is a change from `none`.

Evidence is what the agent chose to report, so it may be too thin to
re-match (a folder's file list, say). The active policy is the control: if
neither it nor the new version re-matches the finding's app, the finding is
counted as `unevaluable` rather than reported as a change that is not one.

A verdict that stays is still a change for the person on that machine when what
the agent does changes: audit -> enforce with `terminate`, `notify` ->
`terminate`. Those rows keep the verdict and say the agent's response before and
after (policies.response, the rule the agent itself follows).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

import sqlalchemy as sa
from sqlalchemy.orm import Session

from policies.engine import Engine, HostContext
from policies.engine import Finding as EngineFinding
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    InstallSource,
    Observation,
    ProcessObservation,
)
from policies.response import planned_actions
from policies.vocabulary import OS_NAMES
from server.models import Agent, Finding

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
_INSTALL_SOURCES = frozenset(get_args(InstallSource))
_OSES = frozenset(OS_NAMES)
# Rows read at a time: the preview walks every open finding of the fleet.
_BATCH = 1000
# The verdicts an agent reports without being asked for allowed apps too.
_REPORTED = frozenset({"deny", "alert"})


@dataclass
class _Tally:
    agents_evaluated: int = 0
    agents_affected: int = 0
    findings_evaluated: int = 0
    unevaluable: int = 0
    changes: int = 0
    newly_denied: int = 0
    no_longer_denied: int = 0
    response_changes: int = 0
    newly_terminated: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)


class _Engines:
    """One engine per distinct host context: a fleet has few OS x group combinations.

    The hostname only matters to rules with host exceptions, so it is part of the
    key only for the hosts a bundle names; everyone else shares an engine.
    """

    def __init__(self, bundle: Mapping[str, Any], today: dt.date) -> None:
        self.bundle = dict(bundle)
        self.today = today
        self.rules: Mapping[str, Any] = bundle.get("rules", {})
        self._named_hosts = {host for rule in self.rules.values()
                             for exception in rule.get("exceptions", [])
                             for host in exception.get("hosts", [])}
        self._cache: dict[tuple[str, str | None, str], Engine] = {}

    def for_agent(self, agent: Agent) -> Engine:
        os_name = agent.os if agent.os in _OSES else "linux"
        hostname = agent.hostname if agent.hostname in self._named_hosts else ""
        key = (os_name, agent.group, hostname)
        engine = self._cache.get(key)
        if engine is None:
            host = HostContext(os=os_name,
                               hostname=hostname,
                               groups=frozenset({agent.group}) if agent.group else frozenset(),
                               today=self.today)
            engine = self._cache[key] = Engine(self.bundle, host)
        return engine


def preview(
    session: Session,
    bundle: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    today: dt.date,
    limit: int = DEFAULT_LIMIT,
) -> dict[str, Any]:
    """What activating `bundle` would change, against `baseline` (the active bundle, if any).

    Answers `totals` (always complete) and `changes`: one row per finding or
    newly matched app that would change verdict, grouped by agent (hostname
    order), at most `limit` rows (`truncated` says when there were more).
    """
    engines = _Engines(bundle, today)
    control = _Engines(baseline, today) if baseline is not None else None
    tally = _Tally()
    query = (sa.select(Finding, Agent).join(Agent, Agent.id == Finding.agent_id)
             .where(Finding.status == "open", Agent.revoked_at.is_(None))
             .order_by(Agent.hostname, Agent.id, Finding.id)
             .execution_options(yield_per=_BATCH))
    rows = session.execute(query)
    for _, group in itertools.groupby(rows, key=lambda pair: pair[1].id):
        pairs = list(group)
        agent = pairs[0][1]
        tally.agents_evaluated += 1
        changes = _agent_changes(agent, [finding for finding, _ in pairs], engines, control,
                                 tally)
        if changes:
            tally.agents_affected += 1
            _count(changes, tally, limit)
    return {
        "version": bundle.get("version"),
        "compared_with": baseline.get("version") if baseline is not None else None,
        "totals": {"agents_evaluated": tally.agents_evaluated,
                   "agents_affected": tally.agents_affected,
                   "findings_evaluated": tally.findings_evaluated,
                   "unevaluable": tally.unevaluable, "changes": tally.changes,
                   "newly_denied": tally.newly_denied,
                   "no_longer_denied": tally.no_longer_denied,
                   "response_changes": tally.response_changes,
                   "newly_terminated": tally.newly_terminated},
        "changes": tally.rows,
        "truncated": tally.changes > len(tally.rows),
    }


def _count(changes: list[dict[str, Any]], tally: _Tally, limit: int) -> None:
    for change in changes:
        tally.changes += 1
        # A row may keep its verdict (only the agent's response changes).
        if change["after"] == "deny" != change["before"]:
            tally.newly_denied += 1
        if change["before"] == "deny" != change["after"]:
            tally.no_longer_denied += 1
        if change["before_response"] != change["after_response"]:
            tally.response_changes += 1
            if (_terminates(change["after_response"])
                    and not _terminates(change["before_response"])):
                tally.newly_terminated += 1
        if len(tally.rows) < limit:
            tally.rows.append(change)


def _agent_changes(
    agent: Agent, open_findings: list[Finding], engines: _Engines, control: _Engines | None,
    tally: _Tally,
) -> list[dict[str, Any]]:
    engine = engines.for_agent(agent)
    baseline = control.for_agent(agent) if control is not None else None
    recorded = {(finding.app, identity_of(finding)) for finding in open_findings}
    newly_matched: set[tuple[str, str]] = set()
    changes: list[dict[str, Any]] = []
    for finding in open_findings:
        tally.findings_evaluated += 1
        observation = observation_from_evidence(finding.sensor, finding.evidence)
        # One evaluation serves both questions below: each costs a pass over the evidence.
        found = engine.evaluate(observation, include_allowed=True) if observation else []
        after = _new_verdict(finding.app, observation, found, baseline, engines.rules)
        if after is None:
            tally.unevaluable += 1
            continue
        after_response = _response(found, finding.app)
        before_response = _before_response(baseline, observation, finding)
        if after != finding.verdict or (before_response is not None
                                        and before_response != after_response):
            changes.append(_change(agent, finding, finding.app, finding.verdict, after,
                                   before_response=before_response or "",
                                   after_response=after_response))
        # Apps the new version denies or alerts on that this observation also matches.
        for other in found:
            if other.verdict not in _REPORTED:
                continue
            key = (other.app, identity_of(finding))
            if key not in recorded and key not in newly_matched:
                newly_matched.add(key)
                changes.append(_change(agent, None, other.app, "none", other.verdict,
                                       sensor=finding.sensor, before_response="",
                                       after_response=_response(found, other.app)))
    return changes


def _new_verdict(
    app: str, observation: Observation | None, found: list[EngineFinding],
    baseline: Engine | None, rules: Mapping[str, Any],
) -> str | None:
    """The verdict the new version gives `app` here (`found`: its findings for the
    observation, allowed ones included); "none" if it would not report it at all;
    None when the evidence cannot tell."""
    if app not in rules:
        return "none"  # no rule: agents would not report the app, whatever the evidence
    if observation is None:
        return None
    for finding in found:
        if finding.app == app:
            return finding.verdict
    if baseline is not None and _verdict_for(baseline, observation, app) is not None:
        return "none"  # the active policy re-matches it; the new one's signatures do not
    return None


def _terminates(response: str) -> bool:
    # What runs comes before any "(would ...: reason)" that audit mode holds back.
    return "terminate" in response.split(" (", 1)[0]


def _response(found: list[EngineFinding], app: str) -> str:
    """What the agent does about `app` here, in a few words: 'report', 'notify',
    'notify + terminate', 'notify (would terminate: audit mode)'."""
    for finding in found:
        if finding.app == app:
            plans = planned_actions(finding)
            if not plans:
                return "report" if finding.verdict in _REPORTED else "nothing"
            done = " + ".join(plan.action for plan in plans if plan.runs)
            held = [plan for plan in plans if not plan.runs]
            return done + "".join(f" (would {plan.action}: {plan.reason.split(':')[0]})"
                                  for plan in held)
    return "nothing"


def _before_response(baseline: Engine | None, observation: Observation | None,
                     finding: Finding) -> str | None:
    """The response under the active policy; None without one to compare with."""
    if baseline is None or observation is None:
        return None
    return _response(baseline.evaluate(observation, include_allowed=True), finding.app)


def _verdict_for(engine: Engine, observation: Observation, app: str) -> str | None:
    for finding in engine.evaluate(observation, include_allowed=True):
        if finding.app == app:
            return finding.verdict
    return None


def _change(agent: Agent, finding: Finding | None, app: str, before: str, after: str,
            sensor: str | None = None, *, before_response: str,
            after_response: str) -> dict[str, Any]:
    return {"agent_id": agent.id, "hostname": agent.hostname, "group": agent.group,
            "finding_id": finding.id if finding else None, "app": app,
            "sensor": finding.sensor if finding else sensor, "before": before, "after": after,
            "before_response": before_response, "after_response": after_response}


def identity_of(finding: Finding) -> str:
    """The observation part of the agent's key (`app|sensor|identity`)."""
    parts = finding.key.split("|", 2)
    return parts[2] if len(parts) == 3 else finding.key


def observation_from_evidence(sensor: str, evidence: Mapping[str, Any]) -> Observation | None:
    """The observation an agent's evidence describes, or None if it is too incomplete.

    The inverse of the engine's evidence: process -> ProcessObservation,
    installed -> InstalledObservation, network -> ConnectionObservation.
    """
    if not isinstance(evidence, Mapping):
        return None  # a row from before ingest checked evidence: nothing to rebuild from
    try:
        if sensor == "process":
            return _process(evidence)
        if sensor == "installed":
            return _installed(evidence)
        if sensor == "network":
            return _connection(evidence)
    except (TypeError, ValueError):
        return None  # an agent sent odd types; nothing to re-evaluate
    return None


def _process(evidence: Mapping[str, Any]) -> ProcessObservation | None:
    name, exe = _text(evidence.get("name")), _text(evidence.get("exe"))
    if not name and not exe:
        return None
    return ProcessObservation(
        pid=int(evidence.get("pid") or 0), name=name or _basename(exe or ""),
        create_time=float(evidence.get("create_time") or 0.0), exe=exe,
        cmdline=tuple(str(part) for part in _list(evidence.get("cmdline"))),
        username=_text(evidence.get("username")), sha256=_text(evidence.get("sha256")),
        ppid=int(evidence["ppid"]) if evidence.get("ppid") is not None else None,
        content=_refs(evidence))


def _installed(evidence: Mapping[str, Any]) -> InstalledObservation | None:
    source = evidence.get("source")
    identifier = _text(evidence.get("id")) or _text(evidence.get("package")) \
        or _text(evidence.get("bundle_id"))
    if source not in _INSTALL_SOURCES or not identifier:
        return None
    return InstalledObservation(
        source=cast(InstallSource, source), id=identifier, path=_text(evidence.get("path")),
        version=_text(evidence.get("version")), user=_text(evidence.get("user")),
        display_name=_text(evidence.get("display_name")),
        publisher=_text(evidence.get("publisher")), team_id=_text(evidence.get("team_id")),
        contents=frozenset(str(name) for name in _list(evidence.get("contents"))),
        content=_refs(evidence))


def _refs(evidence: Mapping[str, Any]) -> tuple[str, ...]:
    """The content signatures the agent matched (agent/sensors/content.py)."""
    return tuple(str(ref) for ref in _list(evidence.get("content_signatures")))


def _connection(evidence: Mapping[str, Any]) -> ConnectionObservation | None:
    remote_ip, remote_port = _text(evidence.get("remote_ip")), evidence.get("remote_port")
    if (not remote_ip or remote_port is None) and evidence.get("remote_address"):
        host, _, port = str(evidence["remote_address"]).rpartition(":")
        remote_ip, remote_port = host.strip("[]"), port
    if not remote_ip or remote_port is None:
        return None
    local_ip, _, local_port = str(evidence.get("local_address") or "").rpartition(":")
    protocol: Literal["tcp", "udp"] = "udp" if evidence.get("protocol") == "udp" else "tcp"
    return ConnectionObservation(
        remote_ip=remote_ip, remote_port=int(remote_port), local_ip=local_ip.strip("[]"),
        local_port=int(local_port) if local_port.isdigit() else 0, protocol=protocol,
        pid=int(evidence["pid"]) if evidence.get("pid") is not None else None,
        process_name=_text(evidence.get("process_name")),
        remote_host=_text(evidence.get("remote_host")),
        host_from_dns=evidence.get("host_from_dns") is True)


def _text(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _list(value: object) -> Iterable[object]:
    return value if isinstance(value, list) else ()


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]
