"""`warden findings list|show|triage|ack|resolve|export`: the reviewers' side of the CLI.

Triage takes any state (`false_positive`, `excepted`, …), several ids at once, or every
finding a filter matches (`--app telegram --host 'lab-*'`): the server changes them all in
one transaction, or none when an id is unknown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policies.vocabulary import FINDING_STATUSES, SENSORS, TRIAGE_STATES
from server.api_client import WardenClient
from server.cli.admin_output import EXIT_API, EXIT_USAGE, as_json, fail, show, table, when
from server.cli.admin_runner import Command
from server.schemas.findings import MAX_BULK_TRIAGE, FindingDetail

Adder = Callable[..., argparse.ArgumentParser]
_FILTERS = ("app", "status", "triage", "host", "group", "sensor", "since", "until")


def register(subparsers: Any, connection: argparse.ArgumentParser, add: Adder) -> None:
    findings = subparsers.add_parser("findings", help="list, show, triage and export findings")
    actions = findings.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = add(actions, "list", "findings matching the filters", connection,
                  cmd_findings_list, True)
    _filters(listing)
    listing.add_argument("--limit", type=_positive, default=None,
                         help="show at most this many (default: all)")
    one = add(actions, "show", "one finding: what was seen, each action's outcome, its "
              "timeline", connection, cmd_findings_show, True)
    one.add_argument("finding_id", type=_positive, metavar="ID")

    triage = add(actions, "triage", "set findings (by id, or all a filter matches) to a "
                 "triage state", connection, cmd_findings_triage)
    triage.add_argument("state", choices=TRIAGE_STATES, metavar="STATE",
                        help=f"one of {', '.join(TRIAGE_STATES)}")
    _triage_targets(triage)
    for name, state in (("ack", "acknowledged"), ("resolve", "resolved")):
        shortcut = add(actions, name, f"mark findings {state} (by id, or by filter)",
                       connection, cmd_findings_triage)
        _triage_targets(shortcut)
        shortcut.set_defaults(state=state)

    export = add(actions, "export", "every finding matching the filters as CSV or JSON",
                 connection, cmd_findings_export)
    export.add_argument("--format", choices=["csv", "json"], required=True)
    _filters(export)
    export.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write to FILE instead of standard output")


def _triage_targets(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("finding_ids", nargs="*", type=_positive, metavar="ID",
                        help="the findings' ids; or give filters instead")
    parser.add_argument("--comment", default="", help="why, for the audit trail")
    _filters(parser)


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", help="catalog app id, e.g. telegram")
    parser.add_argument("--status", choices=FINDING_STATUSES)
    parser.add_argument("--triage", choices=TRIAGE_STATES)
    parser.add_argument("--host", help="hostname, or a prefix ending in *")
    parser.add_argument("--group")
    parser.add_argument("--sensor", choices=SENSORS)
    parser.add_argument("--since", metavar="TIME", help="RFC 3339 time or date")
    parser.add_argument("--until", metavar="TIME", help="RFC 3339 time or date")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _filter_values(args: argparse.Namespace) -> dict[str, str | None]:
    return {name: getattr(args, name) for name in _FILTERS}


def cmd_findings_list(client: WardenClient, args: argparse.Namespace) -> int:
    findings = client.list_findings(limit=args.limit, **_filter_values(args))
    return show(args, findings, "no findings match", [
        ("ID", lambda f: f.id), ("APP", lambda f: f.app), ("HOST", lambda f: f.host),
        ("SENSOR", lambda f: f.sensor), ("VERDICT", lambda f: f.verdict),
        ("OUTCOME", lambda f: f.outcome), ("STATUS", lambda f: f.status),
        ("TRIAGE", lambda f: f.triage), ("LAST SEEN", lambda f: when(f.last_seen)),
        ("COUNT", lambda f: f.count)])


def cmd_findings_show(client: WardenClient, args: argparse.Namespace) -> int:
    finding = client.get_finding(str(args.finding_id))
    if args.json:
        import json

        print(json.dumps(as_json(finding), indent=2))
        return 0
    print(describe(finding))
    return 0


def describe(finding: FindingDetail) -> str:
    """A finding for people: what was seen, what the agent did (outcomes), the timeline."""
    lines = [f"finding {finding.id}: {finding.app} on {finding.host or finding.agent_id}",
             f"  verdict     {finding.verdict} ({finding.status}; triage {finding.triage}"
             + (f" by {finding.triage_by_name}" if finding.triage_by_name else "") + ")",
             f"  sensor      {finding.sensor}",
             f"  seen        {finding.count} time(s), first {when(finding.first_seen)}, "
             f"last {when(finding.last_seen)}",
             f"  policy      asked for {finding.action}"]
    if finding.outcomes:
        for item in finding.outcomes:
            detail = f" ({item.detail})" if item.detail and item.state != "done" else ""
            lines.append(f"  outcome     {item.action}: {item.state.replace('_', ' ')}{detail}")
    else:
        lines.append(f"  outcome     {finding.outcome}")
    if finding.message:
        told = any(o.action == "notify" and o.state == "done" for o in finding.outcomes)
        lines.append(f"  {'told user' if told else 'message':<11} {finding.message}"
                     + ("" if told else " (not delivered)"))
    if finding.alternative:
        lines.append(f"  instead     {finding.alternative}")
    if finding.triage_comment:
        lines.append(f"  comment     {finding.triage_comment}")
    lines += ["  evidence"] + [f"    {key}: {value}" for key, value in
                               sorted(finding.evidence.items())]
    lines.append("timeline")
    rows = [{"time": when(event.time), "event": event.type.replace("finding_", ""),
             "detail": _event_detail(event.payload)} for event in finding.events]
    lines += ["  " + line for line in table(rows, [
        ("TIME", lambda r: r["time"]), ("EVENT", lambda r: r["event"]),
        ("DETAIL", lambda r: r["detail"])]).splitlines()] if rows else ["  (no events)"]
    return "\n".join(lines)


def _event_detail(payload: dict[str, Any]) -> str:
    result = payload.get("result")
    if not isinstance(result, dict):
        return ""
    from server.store.outcomes import state_of

    state = state_of(result).replace("_", " ")
    detail = f" ({result['detail']})" if result.get("detail") else ""
    return f"{result.get('action')}: {state}{detail}"


def cmd_findings_triage(client: WardenClient, args: argparse.Namespace) -> int:
    ids: list[int] = list(args.finding_ids)
    filters: dict[str, str | None] = {name: value for name, value in
                                      _filter_values(args).items() if value}
    if ids and filters:
        return fail("give finding ids or filters, not both", EXIT_USAGE)
    if not ids and not filters:
        return fail("name the findings: one or more ids, or filters such as --app telegram "
                    "--host 'lab-*' (see `warden findings triage --help`)", EXIT_USAGE)
    if filters:
        ids = [finding.id for finding in client.iter_findings(100, **filters)]
        if not ids:
            print("no findings match; nothing was changed", file=sys.stderr)
            return 0
    if len(ids) == 1:
        # One finding: its own route, which any server version has.
        result = client.triage_finding(str(ids[0]), args.state, args.comment)
        print(f"finding {ids[0]}: {result.triage}")
        return 0
    changed = 0
    for start in range(0, len(ids), MAX_BULK_TRIAGE):
        changed += len(client.triage_findings(ids[start:start + MAX_BULK_TRIAGE], args.state,
                                              args.comment))
    shown = ", ".join(str(finding_id) for finding_id in ids[:10])
    more = f" and {len(ids) - 10} more" if len(ids) > 10 else ""
    print(f"{changed} finding(s) now {args.state}: {shown}{more}")
    return 0


def cmd_findings_export(client: WardenClient, args: argparse.Namespace) -> int:
    filters = _filter_values(args)
    if args.output is None:
        sys.stdout.flush()
        client.stream_export(args.format, sys.stdout.buffer, **filters)
        sys.stdout.buffer.flush()
        return 0
    target: Path = args.output
    # Write beside the target and rename, so a broken export never leaves half a file.
    try:
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        return fail(f"cannot write {target}: {exc.strerror}", EXIT_API)
    try:
        with os.fdopen(fd, "wb") as handle:
            written = client.stream_export(args.format, handle, **filters)
        os.replace(temp_name, target)
    except OSError as exc:
        return fail(f"cannot write {target}: {exc.strerror}", EXIT_API)
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    print(f"exported findings to {target} ({written} bytes, {args.format})")
    return 0


__all__ = ["Command", "register"]
