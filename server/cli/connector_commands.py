"""`warden connectors add|list|show|remove|sync`: the MDMs phones are read from.

Secrets are read from a file (`--client-secret-file`, `--service-account-file`),
never from the command line (where `ps` and shell history would keep them), sent
once to the server, and never printed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

from server.api_client import WardenClient
from server.cli.admin_output import EXIT_USAGE, Column, as_json, fail, render, show, when

# argparse makes this class generic for type checkers only.
SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
MAX_SECRET_BYTES = 65_536

_COLUMNS: list[Column] = [
    ("NAME", lambda r: r.name), ("KIND", lambda r: r.kind), ("HOSTS", lambda r: r.hosts),
    ("EVERY", lambda r: f"{r.interval_minutes} min"),
    ("LAST SYNC", lambda r: when(r.last_sync_at) if r.last_sync_at else "never"),
    ("RESULT", lambda r: r.last_result), ("ERROR", lambda r: r.last_error)]


def register(subparsers: SubParsers, connection: argparse.ArgumentParser,
             add: Callable[..., argparse.ArgumentParser]) -> None:
    area = subparsers.add_parser("connectors", help="MDM connectors: phones and tablets from "
                                 "Intune, Jamf Pro or the Android Management API")
    actions = area.add_subparsers(dest="action", required=True, metavar="ACTION")
    adding = actions.add_parser("add", help="add an MDM connector")
    kinds = adding.add_subparsers(dest="kind", required=True, metavar="KIND")
    intune = add(kinds, "intune", "Microsoft Intune (Graph, client credentials)", connection,
                 cmd_add)
    intune.add_argument("--tenant-id", required=True)
    intune.add_argument("--client-id", required=True)
    intune.add_argument("--client-secret-file", type=Path, required=True, metavar="FILE")
    intune.add_argument("--graph-url", help="default https://graph.microsoft.com")
    intune.add_argument("--login-url", help="default https://login.microsoftonline.com")
    # `--url` is the Jamf Pro server here; the Warden server is --server-url (or WARDEN_URL).
    jamf = add(kinds, "jamf", "Jamf Pro (API client credentials, or a user with --auth basic)",
               _server_url_options(), cmd_add)
    jamf.add_argument("--url", dest="jamf_url", required=True,
                      help="the Jamf Pro server, https://…")
    jamf.add_argument("--client-id", required=True, help="API client id (or user name)")
    jamf.add_argument("--client-secret-file", type=Path, required=True, metavar="FILE")
    jamf.add_argument("--auth", choices=["oauth", "basic"], default=None)
    android = add(kinds, "android", "Android Management API (a service account)", connection,
                  cmd_add)
    android.add_argument("--enterprise", required=True, help="enterprises/ID or ID")
    android.add_argument("--service-account-file", type=Path, required=True, metavar="FILE")
    android.add_argument("--api-url", help="default https://androidmanagement.googleapis.com")
    android.add_argument("--token-url", help="default: the key file's token_uri")
    for parser in (intune, jamf, android):
        parser.add_argument("name", metavar="NAME")
        parser.add_argument("--interval-minutes", type=int, default=60, metavar="N")
        parser.add_argument("--group", metavar="G", help="the phones join this group")
    add(actions, "list", "connectors and their last sync", connection, cmd_list, True)
    for verb, helptext, command in (("show", "one connector, its last result and error",
                                     cmd_show),
                                    ("remove", "remove a connector (its phones stay, retired)",
                                     cmd_remove),
                                    ("sync", "sync now; prints devices, apps and findings "
                                     "opened and resolved", cmd_sync)):
        parser = add(actions, verb, helptext, connection, command, verb != "remove")
        parser.add_argument("name", metavar="NAME")
        if verb == "sync":  # a large fleet takes a while; the server answers when it is done
            parser.set_defaults(timeout=600.0)


def _server_url_options() -> argparse.ArgumentParser:
    """connection_options with the Warden server's URL as --server-url."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("server connection")
    group.add_argument("--server-url", dest="url", help="Warden server URL (default: "
                       "$WARDEN_URL, the config file, or http://127.0.0.1:8700)")
    group.add_argument("--token", help="API token (default: $WARDEN_TOKEN or the config file)")
    group.add_argument("--ca-bundle", metavar="FILE",
                       help="CA certificates for a server with a private CA")
    group.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for the server to answer (default: 10)")
    return connection


def _secret(path: Path) -> str | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read the secret file {path}: {exc.strerror}", EXIT_USAGE)
        return None
    if len(raw) > MAX_SECRET_BYTES:
        fail(f"the secret file {path} is over {MAX_SECRET_BYTES} bytes; is it the right file?",
             EXIT_USAGE)
        return None
    text = raw.decode("utf-8", errors="replace").strip()
    if not text:
        fail(f"the secret file {path} is empty", EXIT_USAGE)
        return None
    return text


def cmd_add(client: WardenClient, args: argparse.Namespace) -> int:
    secret_file = args.service_account_file if args.kind == "android" \
        else args.client_secret_file
    secret = _secret(secret_file)
    if secret is None:
        return EXIT_USAGE
    body: dict[str, Any] = {"name": args.name, "kind": args.kind, "secret": secret,
                            "interval_minutes": args.interval_minutes, "group": args.group}
    for option in ("tenant_id", "client_id", "auth", "enterprise", "graph_url",
                   "login_url", "api_url", "token_url"):
        value = getattr(args, option, None)
        if value is not None:
            body[option] = value
    if getattr(args, "jamf_url", None):
        body["url"] = args.jamf_url
    record = client.add_connector(body)
    print(f"connector {record.name} added ({record.kind}); its phones appear as hosts with "
          f"source {record.source} after the first sync (`warden connectors sync "
          f"{record.name}`, or within a few minutes)")
    return 0


def cmd_list(client: WardenClient, args: argparse.Namespace) -> int:
    return show(args, client.list_connectors(), "no connector; add one with `warden "
                "connectors add`", _COLUMNS)


def cmd_show(client: WardenClient, args: argparse.Namespace) -> int:
    record = as_json(client.get_connector(args.name))
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        render(record)
    return 0


def cmd_remove(client: WardenClient, args: argparse.Namespace) -> int:
    record = client.remove_connector(args.name)
    print(f"connector {record.name} removed; its {record.hosts or 0} phone(s) stay as "
          "retired hosts with their findings")
    return 0


def cmd_sync(client: WardenClient, args: argparse.Namespace) -> int:
    counts = client.sync_connector(args.name)
    summary = {"devices": counts.devices, "apps": counts.apps,
               "findings_opened": counts.findings_opened,
               "findings_resolved": counts.findings_resolved}
    if args.json:
        print(json.dumps({**summary, "devices_retired": counts.devices_retired,
                          "notes": counts.notes}))
        return 0
    print(f"{args.name}: {counts.devices} devices, {counts.apps} apps; "
          f"{counts.findings_opened} findings opened, {counts.findings_resolved} resolved, "
          f"{counts.devices_retired} devices retired")
    for note in counts.notes:
        print(f"note: {note}")
    return 0
