"""`warden agents reenrollments|approve-reenroll|reject-reenroll`: held re-enrollments.

A known machine that enrolls without proving it holds the machine's key waits for an
administrator (docs/api.md, "Proof of possession"). Approving names the key that was
reviewed, so a request replaced by another key since is refused, not approved blind.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from server.api_client import WardenClient
from server.cli.admin_output import EXIT_API, Column, fail, show, when

# argparse makes this class generic for type checkers only.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_COLUMNS: list[Column] = [
    ("AGENT", lambda r: r.agent_id), ("HOSTNAME", lambda r: r.agent_hostname),
    ("ASKED AS", lambda r: r.hostname), ("FROM", lambda r: r.address),
    ("KEY", lambda r: r.public_key or "none"),
    ("KEYS", lambda r: r.keys_seen), ("FIRST ASKED", lambda r: when(r.requested_at)),
    ("APPROVED", lambda r: when(r.approved_at) if r.approved_at else "")]


def register(actions: SubParsers, connection: argparse.ArgumentParser,
             add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands under `warden agents`; `add` is admin_commands' way to add one."""
    add(actions, "reenrollments", "re-enrollments awaiting an administrator's approval",
        connection, cmd_reenrollments, True)
    approve = add(actions, "approve-reenroll", "let the held re-enrollment of agent ID "
                  "enroll once", connection, cmd_approve)
    approve.add_argument("id", metavar="ID")
    approve.add_argument("--public-key", metavar="KEY",
                         help="the key you reviewed (default: the one pending now, shown "
                              "before it is approved)")
    reject = add(actions, "reject-reenroll", "drop the held re-enrollment of agent ID",
                 connection, cmd_reject)
    reject.add_argument("id", metavar="ID")


def cmd_reenrollments(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_reenrollments(), "no re-enrollment is pending", _COLUMNS)


def cmd_approve(client: WardenClient, args: argparse.Namespace) -> int:
    key = args.public_key
    if key is None:
        pending = client.get_agent(args.id).reenrollment
        if pending is None:
            return fail(f"no re-enrollment of agent {args.id} is pending", EXIT_API)
        key = pending.public_key
        print(f"pending: asked as {pending.hostname} from {pending.address} "
              f"with key {key or 'none'} ({pending.keys_seen} key(s) seen): "
              f"{pending.reason}")
    approved = client.approve_reenrollment(args.id, key)
    print(f"re-enrollment of agent {args.id} approved: the agent with key "
          f"{approved.public_key or 'none'} may enroll once; the current token works "
          "until then")
    return 0


def cmd_reject(client: WardenClient, args: argparse.Namespace) -> int:
    client.reject_reenrollment(args.id)
    print(f"re-enrollment of agent {args.id} rejected: the agent keeps its current token")
    return 0
