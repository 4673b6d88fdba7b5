"""`warden violations list|show|triage|export` and `warden report compliance`: the review list
and the compliance report from the command line.

Like the other admin commands, each talks to a running server with an API
token (server.cli.admin_runner) and fails with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, TypeAlias

from policies.vocabulary import FINDING_STATUSES, TRIAGE_STATES
from server.api_client import WardenClient
from server.cli.admin_output import EXIT_API, as_json, fail, render, show, when
from server.cli.admin_runner import Command, connection_options, runner

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_FILTERS = ("app", "status", "triage", "host", "group", "since", "until")


def register(subparsers: SubParsers) -> None:
    connection = connection_options()
    area = subparsers.add_parser(
        "violations", help="one row per machine x denied app: list, show, triage, export")
    actions = area.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _add(actions, "list", "violations matching the filters", connection,
                   cmd_violations_list, json_flag=True)
    _filters(listing)
    listing.add_argument("--limit", type=_positive, default=None,
                         help="show at most this many (default: all)")
    show_one = _add(actions, "show", "one violation and its findings", connection,
                    cmd_violations_show, json_flag=True)
    show_one.add_argument("violation_id", metavar="ID")
    triage = _add(actions, "triage", "set the triage state of a violation and its findings",
                  connection, cmd_violations_triage)
    triage.add_argument("violation_id", metavar="ID")
    triage.add_argument("--state", required=True, choices=TRIAGE_STATES)
    triage.add_argument("--comment", default="", help="why, for the audit trail")
    export = _add(actions, "export", "every violation matching the filters as CSV or JSON",
                  connection, cmd_violations_export)
    export.add_argument("--format", choices=["csv", "json"], required=True)
    _filters(export)
    export.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write to FILE instead of standard output")


    report = subparsers.add_parser("report", help="reports to hand on")
    kinds = report.add_subparsers(dest="kind", required=True, metavar="KIND")
    compliance = _add(kinds, "compliance", "summary, trend, worst groups, open violations "
                      "and active exceptions", connection, cmd_report_compliance)
    compliance.add_argument("--format", choices=["pdf", "html", "csv", "json"], default="pdf")
    compliance.add_argument("--out", type=Path, required=True, metavar="FILE",
                            help="where to write the report")
    compliance.add_argument("--group", help="one group (default: the whole fleet)")
    compliance.add_argument("--days", type=_days, default=30,
                            help="how many days of trend, today included (1-366; default 30)")


def _add(actions: SubParsers, name: str, help: str, connection: argparse.ArgumentParser,
         command: Command, json_flag: bool = False) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help, parents=[connection])
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=runner(command))
    return parser


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", help="catalog app id, e.g. telegram")
    parser.add_argument("--status", choices=FINDING_STATUSES)
    parser.add_argument("--triage", choices=TRIAGE_STATES)
    parser.add_argument("--host", help="hostname, or a prefix ending in *")
    parser.add_argument("--group")
    parser.add_argument("--since", metavar="TIME", help="last seen at or after (RFC 3339 "
                                                        "time or date)")
    parser.add_argument("--until", metavar="TIME", help="last seen before")


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _days(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 366:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days from 1 to 366")
    return int(text)


def _filter_values(args: argparse.Namespace) -> dict[str, str | None]:
    return {name: getattr(args, name) for name in _FILTERS}


def _sensors(counts: dict[str, int]) -> str:
    return " ".join(f"{sensor}:{count}" for sensor, count in counts.items())


def cmd_violations_list(client: WardenClient, args: argparse.Namespace) -> int:
    found = client.list_violations(limit=args.limit, **_filter_values(args))
    return show(args, found, "no violations match", [
        ("ID", lambda v: v.id), ("APP", lambda v: v.app), ("HOST", lambda v: v.host),
        ("GROUP", lambda v: v.group), ("STATUS", lambda v: v.status),
        ("TRIAGE", lambda v: v.triage), ("FIRST SEEN", lambda v: when(v.first_seen)),
        ("LAST SEEN", lambda v: when(v.last_seen)),
        ("SIGHTINGS", lambda v: _sensors(v.sensor_counts))])


def cmd_violations_show(client: WardenClient, args: argparse.Namespace) -> int:
    detail = client.get_violation(args.violation_id)
    body = as_json(detail)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    body["findings"] = [{"id": f["id"], "sensor": f["sensor"], "status": f["status"],
                         "triage": f["triage"], "count": f["count"],
                         "last_seen": when(f["last_seen"]), "key": f["key"]}
                        for f in body["findings"]]
    render(body)
    return 0


def cmd_violations_triage(client: WardenClient, args: argparse.Namespace) -> int:
    result = client.triage_violation(args.violation_id, args.state, args.comment)
    print(f"violation {args.violation_id} ({result.app} on {result.host}): {result.triage}, "
          f"with its {result.finding_count} finding{'s' if result.finding_count != 1 else ''}")
    return 0


def cmd_violations_export(client: WardenClient, args: argparse.Namespace) -> int:
    filters = _filter_values(args)

    def write(out: IO[bytes]) -> int:
        return client.stream_export(args.format, out, what="violations", **filters)

    if args.output is None:
        sys.stdout.flush()
        write(sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return 0
    written = write_atomically(args.output, write)
    if written is None:
        return EXIT_API
    print(f"exported violations to {args.output} ({written} bytes, {args.format})")
    return 0


def write_atomically(target: Path, write: Callable[[IO[bytes]], int]) -> int | None:
    """Write beside `target` and rename, so a broken download never leaves half a file;
    the bytes written, or None after saying on stderr why not."""
    try:
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}", EXIT_API)
        return None
    try:
        with os.fdopen(fd, "wb") as handle:
            written = write(handle)
        os.replace(temp_name, target)
    except OSError as exc:
        fail(f"cannot write {target}: {exc.strerror}", EXIT_API)
        return None
    finally:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
    return written


def cmd_report_compliance(client: WardenClient, args: argparse.Namespace) -> int:
    target: Path = args.out
    params = {"format": args.format, "days": str(args.days), "group": args.group}
    written = write_atomically(
        target, lambda out: client.stream_download("reports/compliance", out, **params))
    if written is None:
        return EXIT_API
    scope = f"group {args.group}" if args.group else "the whole fleet"
    print(f"wrote the compliance report of {scope}, last {args.days} days, to {target} "
          f"({written} bytes, {args.format})")
    return 0
