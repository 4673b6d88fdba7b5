"""`warden exceptions grant|list|revoke|requests|approve|deny`: who may run a denied app,
where, until when; and the requests people made at their machines."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from typing import TypeAlias

from policies.vocabulary import EXCEPTION_STATES, REQUEST_STATUSES
from server.api_client import WardenClient
from server.cli.admin_output import Column, fail, show, when

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

_EXCEPTIONS: list[Column] = [
    ("ID", lambda r: r.id), ("APP", lambda r: r.app),
    ("FOR", lambda r: f"host {r.hostname or r.agent_id}" if r.agent_id else f"group {r.group}"),
    ("UNTIL", lambda r: when(r.until)), ("STATE", lambda r: r.state),
    ("BY", lambda r: r.created_by), ("REASON", lambda r: r.reason)]
_REQUESTS: list[Column] = [
    ("ID", lambda r: r.id), ("APP", lambda r: r.app), ("HOST", lambda r: r.hostname),
    ("USER", lambda r: r.requested_by), ("DAYS", lambda r: r.days),
    ("ASKED", lambda r: when(r.requested_at)), ("STATUS", lambda r: r.status),
    ("REASON", lambda r: r.reason)]


def register(subparsers: SubParsers, connection: argparse.ArgumentParser,
             add: Callable[..., argparse.ArgumentParser]) -> None:
    area = subparsers.add_parser("exceptions", help="let a denied app run on a machine or "
                                                    "a group until a time")
    actions = area.add_subparsers(dest="action", required=True, metavar="ACTION")
    grant = add(actions, "grant", "allow APP on one host or a group (extends one in force)",
                connection, cmd_grant, True)
    grant.add_argument("--app", required=True, help="catalog app id, e.g. telegram")
    scope = grant.add_mutually_exclusive_group(required=True)
    scope.add_argument("--host", help="an agent id or hostname")
    scope.add_argument("--group")
    period = grant.add_mutually_exclusive_group(required=True)
    period.add_argument("--until", metavar="TIME", help="RFC 3339 time, e.g. 2026-06-30T17:00Z")
    period.add_argument("--days", type=float, help="from now")
    grant.add_argument("--reason", required=True)
    listing = add(actions, "list", "exceptions, newest first", connection, cmd_list, True)
    listing.add_argument("--state", choices=EXCEPTION_STATES)
    listing.add_argument("--app")
    listing.add_argument("--group")
    revoke = add(actions, "revoke", "end exception ID now", connection, cmd_revoke)
    revoke.add_argument("id", metavar="ID")
    requests = add(actions, "requests", "requests made at machines", connection,
                   cmd_requests, True)
    requests.add_argument("--status", choices=REQUEST_STATUSES, default="pending")
    approve = add(actions, "approve", "grant request ID", connection, cmd_approve)
    approve.add_argument("id", metavar="ID")
    approve.add_argument("--days", type=int, help="the period (default: what was asked)")
    approve.add_argument("--comment", default="", help="told to the person")
    deny = add(actions, "deny", "decline request ID", connection, cmd_deny)
    deny.add_argument("id", metavar="ID")
    deny.add_argument("--comment", default="", help="told to the person")


def cmd_grant(client: WardenClient, args: argparse.Namespace) -> int:
    until = args.until
    if args.days is not None:
        if args.days <= 0:
            return fail("--days must be more than 0", 2)
        until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=args.days)).isoformat()
    granted = client.grant_exception(app=args.app, host=args.host, group=args.group,
                                     until=until, reason=args.reason)
    if args.json:
        return show(args, [granted], "", _EXCEPTIONS)
    verb = "extended" if granted.merged else "granted"
    where = f"host {granted.hostname}" if granted.agent_id else f"group {granted.group}"
    print(f"exception {granted.id} {verb}: {granted.app} on {where} until "
          f"{when(granted.until)}; agents take it at their next check-in")
    return 0


def cmd_list(client: WardenClient, args: argparse.Namespace) -> int:
    items = client.list_exceptions(state=args.state, app=args.app, group=args.group)
    return show(args, items, "no exception", _EXCEPTIONS)


def cmd_revoke(client: WardenClient, args: argparse.Namespace) -> int:
    revoked = client.revoke_exception(args.id)
    print(f"exception {revoked.id} revoked: {revoked.app} is denied again from each agent's "
          "next check-in")
    return 0


def cmd_requests(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_exception_requests(args.status),
                f"no {args.status} request", _REQUESTS)


def cmd_approve(client: WardenClient, args: argparse.Namespace) -> int:
    body: dict[str, object] = {"comment": args.comment}
    if args.days is not None:
        body["days"] = args.days
    decided = client.decide_exception_request(args.id, "approve", **body)
    print(f"request {decided.id} approved: {decided.app} on {decided.hostname} "
          f"(exception {decided.exception_id}); {decided.requested_by} is told at the next "
          "check-in")
    return 0


def cmd_deny(client: WardenClient, args: argparse.Namespace) -> int:
    decided = client.decide_exception_request(args.id, "deny", comment=args.comment)
    print(f"request {decided.id} denied; {decided.requested_by} is told at the next check-in")
    return 0
