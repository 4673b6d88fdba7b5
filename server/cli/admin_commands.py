"""`warden policy push|list|diff|activate|rollback|impact`, `agents`, `secrets`, `tokens`
and `audit` (and `findings`, in findings_commands): the admin API from the command line.

Each command talks to a running server (`--url`, else WARDEN_URL, else the config
file, else http://127.0.0.1:8700) with an API token (`--token`, else WARDEN_TOKEN,
else ~/.config/warden/cli.json). A failure is one line on stderr and exit status 1
(2 for a usage problem such as a missing token), never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TypeAlias

from policies.errors import PolicyError
from policies.loader import load_catalog, parse_policy, policy_warnings
from policies.vocabulary import ROLES
from server.api_client import ApiError, WardenClient, WardenClientError
from server.cli import (
    connector_commands,
    exception_commands,
    findings_commands,
    policy_views,
    reenroll_commands,
)
from server.cli.admin_output import EXIT_API, as_json, fail, render, show, when
from server.cli.admin_runner import Command, connection_options, runner
from server.schemas.agents import AgentView
from server.schemas.credentials import NewSecret, NewToken

# argparse makes this class generic for type checkers only.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"



def register(subparsers: SubParsers) -> None:
    connection = connection_options()
    _register_policy(subparsers, connection)
    findings_commands.register(subparsers, connection, _add)
    _register_simple_areas(subparsers, connection)
    connector_commands.register(subparsers, connection, _add)


def _add(actions: SubParsers, name: str, help: str, connection: argparse.ArgumentParser,
         command: Command, json_flag: bool = False) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(name, help=help, parents=[connection])
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=runner(command), usage_of=parser)
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
    diff = _add(actions, "diff", "what changed between two versions: rules, settings, source",
                connection, cmd_policy_diff)
    diff.add_argument("a", type=int, metavar="N")
    diff.add_argument("b", type=int, metavar="M")
    diff.add_argument("--unified", action="store_true",
                      help="print a plain unified diff of the sources (for patch tools)")
    activate = _add(actions, "activate", "serve version N to agents", connection,
                    cmd_policy_activate)
    activate.add_argument("number", type=int, metavar="N")
    _add(actions, "rollback", "re-activate the previously active version", connection,
         cmd_policy_rollback)
    impact = _add(actions, "impact", "what activating version N would change", connection,
                  cmd_policy_impact, True)
    impact.add_argument("number", type=int, metavar="N")


def _register_simple_areas(subparsers: SubParsers, connection: argparse.ArgumentParser) -> None:
    agents = subparsers.add_parser("agents", help="enrolled agents")
    actions = agents.add_subparsers(dest="action", required=True, metavar="ACTION")
    _add(actions, "list", "enrolled agents and their state", connection, cmd_agents_list, True)
    revoke = _add(actions, "revoke", "stop an agent's token from working", connection,
                  cmd_agents_revoke)
    revoke.add_argument("id", metavar="HOST|ID", help="the agent's hostname or id")
    readmit = _add(actions, "readmit", "let a revoked agent's machine enroll again", connection,
                   cmd_agents_readmit)
    readmit.add_argument("id", metavar="HOST|ID", help="the agent's hostname or id")
    reenroll_commands.register(actions, connection, _add)
    exception_commands.register(subparsers, connection, _add)

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
    audit.set_defaults(func=runner(cmd_audit), usage_of=audit)


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
        ("CREATED", lambda p: when(p.created_at)),
        ("BY", lambda p: p.created_by_name or p.created_by),
        ("HASH", lambda p: p.version[:12])])


def cmd_policy_diff(client: WardenClient, args: argparse.Namespace) -> int:
    if args.unified:
        diff = client.diff_policies(args.a, args.b)
        print(diff if diff.endswith("\n") or not diff else diff + "\n", end="")
        if not diff:
            print(f"versions {args.a} and {args.b} have the same source", file=sys.stderr)
        return 0
    print(policy_views.diff_text(client.get_policy(args.a), client.get_policy(args.b)))
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
    impact = client.policy_impact(args.number)
    if args.json:
        print(json.dumps(as_json(impact), indent=2))
    else:
        print(policy_views.impact_text(impact))
    return 0


# --- agents, secrets, tokens, audit -------------------------------------------------


def cmd_agents_list(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_agents(), "no agents enrolled", [
        ("ID", lambda a: a.id), ("HOSTNAME", lambda a: a.hostname),
        ("OS", lambda a: f"{a.os} {a.os_version}".strip()),
        ("AGENT", lambda a: a.agent_version), ("GROUP", lambda a: a.group),
        ("STATE", lambda a: a.state), ("LAST SEEN", lambda a: when(a.last_seen)),
        ("POLICY", _policy_of),
        ("OPEN", lambda a: a.open_findings)])


def _policy_of(agent: AgentView) -> str:
    """'v2', 'v2 (current)'; an unknown bundle by its hash; '-' before the first check-in."""
    if agent.policy_version_number is not None:
        current = " (current)" if agent.policy_current else " (outdated)"
        return f"v{agent.policy_version_number}{current}"
    return (agent.policy_version or "")[:12]


def cmd_agents_revoke(client: WardenClient, args: argparse.Namespace) -> int:
    agent = find_agent(client, args.id)
    client.revoke_agent(agent.id)
    print(f"agent {agent.hostname} ({agent.id}) revoked: its token no longer works")
    return 0


def cmd_agents_readmit(client: WardenClient, args: argparse.Namespace) -> int:
    agent = find_agent(client, args.id)
    client.readmit_agent(agent.id)
    print(f"agent {agent.hostname} ({agent.id}) re-admitted: the machine can enroll again "
          "and gets a new token")
    return 0


def find_agent(client: WardenClient, name: str) -> AgentView:
    """The agent `name` is the id of, else the one it is the hostname of (ignoring case);
    several agents with that hostname is an error that lists them, to pick the id."""
    try:
        return client.get_agent(name)
    except ApiError as exc:
        if exc.status not in (404, 422):
            raise
    named = [agent for agent in client.list_agents(host=name)
             if agent.hostname.lower() == name.lower()] if "*" not in name else []
    if len(named) == 1:
        return named[0]
    if named:
        which = "; ".join(f"{agent.id} ({agent.state}, last seen {when(agent.last_seen)})"
                          for agent in named)
        raise WardenClientError(f"{len(named)} agents have the hostname {name!r}: {which}; "
                                "give the id instead")
    raise WardenClientError(f"no agent has the hostname or id {name!r}; see "
                            "`warden agents list`")


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
        ("TIME", lambda e: when(e.time)), ("WHO", lambda e: e.actor_name or e.actor),
        ("ACTION", lambda e: e.action), ("TARGET", lambda e: e.target)])


def _created(args: argparse.Namespace, result: NewSecret | NewToken, what: str) -> int:
    if args.json:
        print(json.dumps(as_json(result), indent=2))
        return 0
    render(as_json(result))
    print(f"Store the {what} now: the server shows it only once.", file=sys.stderr)
    return 0
