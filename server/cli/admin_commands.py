"""`warden policy push|list|diff|activate|rollback|impact`, `findings`, `agents`,
`secrets`, `tokens` and `audit`: the admin API from the command line.

Each command talks to a running server (`--url`, else WARDEN_URL, else the config
file, else http://127.0.0.1:8700) with an API token (`--token`, else WARDEN_TOKEN,
else ~/.config/warden/cli.json). A failure is one line on stderr and exit status 1
(2 for a usage problem such as a missing token), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TypeAlias

from policies.errors import PolicyError
from policies.loader import load_catalog, parse_policy, policy_warnings
from policies.vocabulary import ROLES, TRIAGE_STATES
from server.api_client import WardenClient
from server.cli import reenroll_commands
from server.cli.admin_output import EXIT_API, as_json, fail, render, show, when
from server.cli.admin_runner import Command, connection_options, runner
from server.schemas.credentials import NewSecret, NewToken

# argparse makes this class generic for type checkers only.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"



def register(subparsers: SubParsers) -> None:
    connection = connection_options()
    _register_policy(subparsers, connection)
    _register_findings(subparsers, connection)
    _register_simple_areas(subparsers, connection)


def _add(actions: SubParsers, name: str, help: str, connection: argparse.ArgumentParser,
         command: Command, json_flag: bool = False) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help, parents=[connection])
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=runner(command))
    return parser


def _register_policy(subparsers: SubParsers, connection: argparse.ArgumentParser) -> None:
    # `warden policy validate|show|test` exist already (policy_commands); join them.
    policy = subparsers.choices.get("policy")
    if policy is None:
        policy = subparsers.add_parser("policy", help="validate, compile, test and manage policies")
        policy.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions = next(a for a in policy._actions if isinstance(a, argparse._SubParsersAction))

    push = _add(actions, "push", "validate a policy file, then upload it as a new version",
                connection, cmd_policy_push)
    push.add_argument("file", type=Path, metavar="FILE")
    push.add_argument("--catalog", type=Path, default=None,
                      help="catalog folder to validate against (default: the stock catalog)")
    _add(actions, "list", "policy versions on the server", connection, cmd_policy_list, True)
    diff = _add(actions, "diff", "unified diff of two versions' sources", connection,
                cmd_policy_diff)
    diff.add_argument("a", type=int, metavar="N")
    diff.add_argument("b", type=int, metavar="M")
    activate = _add(actions, "activate", "serve version N to agents", connection,
                    cmd_policy_activate)
    activate.add_argument("number", type=int, metavar="N")
    _add(actions, "rollback", "re-activate the previously active version", connection,
         cmd_policy_rollback)
    impact = _add(actions, "impact", "what activating version N would change", connection,
                  cmd_policy_impact, True)
    impact.add_argument("number", type=int, metavar="N")


def _register_findings(subparsers: SubParsers, connection: argparse.ArgumentParser) -> None:
    findings = subparsers.add_parser("findings", help="list, triage and export findings")
    actions = findings.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = _add(actions, "list", "findings matching the filters", connection,
                   cmd_findings_list, True)
    _filters(listing)
    listing.add_argument("--limit", type=_positive, default=None,
                         help="show at most this many (default: all)")
    for name, state in (("ack", "acknowledged"), ("resolve", "resolved")):
        triage = _add(actions, name, f"mark a finding {state}", connection, cmd_findings_triage)
        triage.add_argument("finding_id", metavar="ID")
        triage.add_argument("--comment", default="", help="why, for the audit trail")
        triage.set_defaults(state=state)
    export = _add(actions, "export", "every finding matching the filters as CSV or JSON",
                  connection, cmd_findings_export)
    export.add_argument("--format", choices=["csv", "json"], required=True)
    _filters(export)
    export.add_argument("-o", "--output", type=Path, metavar="FILE",
                        help="write to FILE instead of standard output")


def _filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", help="catalog app id, e.g. telegram")
    parser.add_argument("--status", choices=["open", "resolved"])
    parser.add_argument("--triage", choices=TRIAGE_STATES)
    parser.add_argument("--host")
    parser.add_argument("--group")
    parser.add_argument("--sensor", choices=["process", "installed", "network"])
    parser.add_argument("--since", metavar="TIME", help="RFC 3339 time or date")
    parser.add_argument("--until", metavar="TIME", help="RFC 3339 time or date")


def _register_simple_areas(subparsers: SubParsers, connection: argparse.ArgumentParser) -> None:
    agents = subparsers.add_parser("agents", help="enrolled agents")
    actions = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add(actions, "list", "enrolled agents and their state", connection, cmd_agents_list, True)
    revoke = _add(actions, "revoke", "stop an agent's token from working", connection,
                  cmd_agents_revoke)
    revoke.add_argument("id", metavar="ID")
    readmit = _add(actions, "readmit", "let a revoked agent's machine enroll again", connection,
                   cmd_agents_readmit)
    readmit.add_argument("id", metavar="ID")
    reenroll_commands.register(actions, connection, _add)

    secrets = subparsers.add_parser("secrets", help="enrollment secrets")
    actions = secrets.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _add(actions, "create", "a new enrollment secret (shown once)", connection,
                  cmd_secrets_create, True)
    create.add_argument("--group", help="agents enrolled with it join this group")
    _add(actions, "list", "enrollment secrets (without their values)", connection,
         cmd_secrets_list, True)
    revoke = _add(actions, "revoke", "stop a secret from enrolling agents", connection,
                  cmd_secrets_revoke)
    revoke.add_argument("id", metavar="ID")

    tokens = subparsers.add_parser("tokens", help="API tokens for people and scripts")
    actions = tokens.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = _add(actions, "create", "a new API token (shown once)", connection,
                  cmd_tokens_create, True)
    create.add_argument("--name", required=True, help="who or what uses it")
    create.add_argument("--role", required=True, choices=ROLES)
    _add(actions, "list", "API tokens (without their values)", connection, cmd_tokens_list,
         True)
    revoke = _add(actions, "revoke", "stop a token from working", connection,
                  cmd_tokens_revoke)
    revoke.add_argument("id", metavar="ID")

    audit = subparsers.add_parser("audit", help="the admin audit log", parents=[connection])
    audit.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit.set_defaults(func=runner(cmd_audit))


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


# --- policies -----------------------------------------------------------------------


def cmd_policy_push(client: WardenClient, args: argparse.Namespace) -> int:
    path: Path = args.file
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return fail(f"{path}: cannot read the file: {exc}", EXIT_API)
    try:
        policy = parse_policy(text, str(path), load_catalog(args.catalog))
    except PolicyError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        return fail(f"{path} is invalid; nothing was pushed", EXIT_API)
    for warning in policy_warnings(text, str(path), policy):
        print(f"warning: {warning}", file=sys.stderr)
    result = client.push_policy(text)
    print(f"pushed {path} as policy version {result.version_number}")
    if not result.active:
        print(f"activate it with: warden policy activate {result.version_number}")
    return 0


def cmd_policy_list(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_policies(), "no policy versions", [
        ("VERSION", lambda p: p.version_number), ("NAME", lambda p: p.name),
        ("MODE", lambda p: p.mode), ("ACTIVE", lambda p: "*" if p.active else ""),
        ("CREATED", lambda p: when(p.created_at)), ("BY", lambda p: p.created_by),
        ("HASH", lambda p: p.version[:12])])


def cmd_policy_diff(client: WardenClient, args: argparse.Namespace) -> int:
    diff = client.diff_policies(args.a, args.b)
    print(diff if diff.endswith("\n") or not diff else diff + "\n", end="")
    if not diff:
        print(f"versions {args.a} and {args.b} have the same source", file=sys.stderr)
    return 0


def cmd_policy_activate(client: WardenClient, args: argparse.Namespace) -> int:
    result = client.activate_policy(args.number)
    print(f"policy version {result.version_number} is now active")
    return 0


def cmd_policy_rollback(client: WardenClient, args: argparse.Namespace) -> int:
    result = client.rollback_policy()
    print(f"rolled back: policy version {result.version_number} is active again")
    return 0


def cmd_policy_impact(client: WardenClient, args: argparse.Namespace) -> int:
    impact = as_json(client.policy_impact(args.number))
    if args.json:
        print(json.dumps(impact, indent=2))
    else:
        render(impact)
    return 0


# --- findings -----------------------------------------------------------------------

_FILTERS = ("app", "status", "triage", "host", "group", "sensor", "since", "until")


def _filter_values(args: argparse.Namespace) -> dict[str, str | None]:
    return {name: getattr(args, name) for name in _FILTERS}


def cmd_findings_list(client: WardenClient, args: argparse.Namespace) -> int:
    findings = client.list_findings(limit=args.limit, **_filter_values(args))
    return show(args, findings, "no findings match", [
        ("ID", lambda f: f.id), ("APP", lambda f: f.app), ("HOST", lambda f: f.host),
        ("SENSOR", lambda f: f.sensor), ("VERDICT", lambda f: f.verdict),
        ("STATUS", lambda f: f.status), ("TRIAGE", lambda f: f.triage),
        ("LAST SEEN", lambda f: when(f.last_seen)), ("COUNT", lambda f: f.count)])


def cmd_findings_triage(client: WardenClient, args: argparse.Namespace) -> int:
    result = client.triage_finding(args.finding_id, args.state, args.comment)
    print(f"finding {args.finding_id}: {result.triage}")
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


# --- agents, secrets, tokens, audit -------------------------------------------------


def cmd_agents_list(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_agents(), "no agents enrolled", [
        ("ID", lambda a: a.id), ("HOSTNAME", lambda a: a.hostname),
        ("OS", lambda a: f"{a.os} {a.os_version}".strip()),
        ("AGENT", lambda a: a.agent_version), ("GROUP", lambda a: a.group),
        ("STATE", lambda a: a.state), ("LAST SEEN", lambda a: when(a.last_seen)),
        ("POLICY", lambda a: (a.policy_version or "")[:12]),
        ("OPEN", lambda a: a.open_findings)])


def cmd_agents_revoke(client: WardenClient, args: argparse.Namespace) -> int:
    client.revoke_agent(args.id)
    print(f"agent {args.id} revoked: its token no longer works")
    return 0


def cmd_agents_readmit(client: WardenClient, args: argparse.Namespace) -> int:
    client.readmit_agent(args.id)
    print(f"agent {args.id} re-admitted: the machine can enroll again and gets a new token")
    return 0


def cmd_secrets_create(client: WardenClient, args: argparse.Namespace) -> int:
    return _created(args, client.create_secret(args.group), "enrollment secret")


def cmd_secrets_list(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_secrets(), "no enrollment secrets", [
        ("ID", lambda s: s.id), ("GROUP", lambda s: s.group), ("USES", lambda s: s.uses),
        ("CREATED", lambda s: when(s.created_at)), ("REVOKED", lambda s: when(s.revoked_at))])


def cmd_secrets_revoke(client: WardenClient, args: argparse.Namespace) -> int:
    client.revoke_secret(args.id)
    print(f"enrollment secret {args.id} revoked")
    return 0


def cmd_tokens_create(client: WardenClient, args: argparse.Namespace) -> int:
    return _created(args, client.create_token(args.name, args.role), "API token")


def cmd_tokens_list(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_tokens(), "no API tokens", [
        ("ID", lambda t: t.id), ("NAME", lambda t: t.name), ("ROLE", lambda t: t.role),
        ("LAST USED", lambda t: when(t.last_used)), ("CREATED", lambda t: when(t.created_at)),
        ("REVOKED", lambda t: when(t.revoked_at))])


def cmd_tokens_revoke(client: WardenClient, args: argparse.Namespace) -> int:
    client.revoke_token(args.id)
    print(f"API token {args.id} revoked")
    return 0


def cmd_audit(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.audit(), "the audit log is empty", [
        ("TIME", lambda e: when(e.time)), ("ACTOR", lambda e: e.actor),
        ("ACTION", lambda e: e.action), ("TARGET", lambda e: e.target)])


def _created(args: argparse.Namespace, result: NewSecret | NewToken, what: str) -> int:
    if args.json:
        print(json.dumps(as_json(result), indent=2))
        return 0
    render(as_json(result))
    print(f"Store the {what} now: the server shows it only once.", file=sys.stderr)
    return 0
