"""`warden policy validate|show|test` and `warden catalog list`: local, no server needed."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any

from policies.catalog_model import AppDefinition
from policies.compiler import compile_bundle
from policies.content_match import ContentMatcher
from policies.engine import Engine, Finding, HostContext
from policies.errors import PolicyError, ValidationIssue
from policies.export import EXPORT_FORMATS, export
from policies.loader import (
    exec_time_notes,
    load_catalog,
    load_policy,
    parse_policy,
    policy_warnings,
)
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    Observation,
    ProcessObservation,
)
from policies.response import describe_response
from policies.vocabulary import OS_NAMES, OsName
from server.api_client import WardenClient
from server.cli.admin_runner import connection_options, runner

EXIT_INVALID = 1
EXIT_USAGE = 2

# `--package ID` may be any package-manager id; try it against each of them.
_PACKAGE_SOURCES = ("deb", "rpm", "snap", "flatpak", "winget", "homebrew", "msix",
                    "windows_uninstall")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = subparsers.add_parser("policy", help="validate, compile, test and manage policies")
    actions = policy.add_subparsers(dest="action", required=True, metavar="ACTION")

    validate = actions.add_parser("validate", help="check policy files; exit 1 on any error")
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    _catalog_option(validate)
    validate.set_defaults(func=cmd_validate)

    show = actions.add_parser("show", help="print the compiled bundle and its version")
    show.add_argument("file", type=Path, metavar="FILE")
    show.add_argument("--json", action="store_true", help="print the whole bundle as JSON")
    _catalog_option(show)
    show.set_defaults(func=cmd_show)

    export = actions.add_parser(
        "export", parents=[connection_options()],
        help="a policy's denied apps as fapolicyd rules, Santa rules or AppLocker XML",
        description="Export FILE, or without FILE the server's active policy (or --version N).")
    export.add_argument("file", type=Path, metavar="FILE", nargs="?")
    export.add_argument("--version", type=int, metavar="N",
                        help="the server's policy version N instead of the active one")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("--output", type=Path, metavar="PATH", help="write here, not stdout")
    _catalog_option(export)
    export.set_defaults(func=cmd_export)

    test = actions.add_parser("test", help="explain the verdict one observation gets")
    test.add_argument("file", type=Path, metavar="FILE")
    what = test.add_mutually_exclusive_group(required=True)
    what.add_argument("--process", metavar="NAME", help="a process name")
    what.add_argument("--exe", metavar="PATH", help="an executable path")
    what.add_argument("--package", metavar="ID", help="a deb/rpm/snap/flatpak/winget/brew id")
    what.add_argument("--bundle-id", metavar="ID", help="a macOS bundle id")
    what.add_argument("--desktop-file", metavar="NAME", help="a .desktop file name")
    what.add_argument("--connect", metavar="ADDR:PORT", help="a remote IP or host and port")
    what.add_argument("--content", metavar="PATH", type=Path,
                      help="a program file, searched for the policy's content signatures "
                      "(byte strings; e.g. your own build, to check a local rule)")
    test.add_argument("--os", choices=OS_NAMES, default="linux",
                      help="the OS the observation comes from (default: linux)")
    test.add_argument("--host", metavar="HOSTNAME", default="",
                      help="the machine's hostname, to try the policy's exceptions")
    test.add_argument("--group", metavar="GROUP", action="append", default=[],
                      help="a group the machine is in (its enrollment group); repeat for "
                           "more; tries the scope and the exceptions")
    test.add_argument("--json", action="store_true")
    _catalog_option(test)
    test.set_defaults(func=cmd_test)

    catalog = subparsers.add_parser("catalog", help="the stock app catalog")
    catalog_actions = catalog.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = catalog_actions.add_parser("list", help="apps, categories and signature counts")
    listing.add_argument("--json", action="store_true")
    _catalog_option(listing)
    listing.set_defaults(func=cmd_catalog_list)


def _catalog_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--catalog", type=Path, default=None,
                        help="catalog folder (default: the stock catalog)")


def _catalog(args: argparse.Namespace) -> dict[str, AppDefinition] | None:
    try:
        return load_catalog(args.catalog)
    except PolicyError as exc:
        _print_issues(exc)
        return None


def _print_issues(exc: PolicyError) -> None:
    for issue in exc.issues:
        print(f"error: {issue}", file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    if catalog is None:
        return EXIT_INVALID
    failed = 0
    for path in args.files:
        try:
            text = _read(path)
            policy = parse_policy(text, str(path), catalog)
        except PolicyError as exc:
            _print_issues(exc)
            failed += 1
            continue
        for warning in policy_warnings(text, str(path), policy):
            print(f"warning: {warning}", file=sys.stderr)
        print(f"ok: {path}: policy {policy.name!r}, mode {policy.mode}, {len(policy.rules)} rules")
        for note in exec_time_notes(policy, catalog):
            print(f"note: {path}: {note}")
    if failed:
        print(f"{failed} of {len(args.files)} file(s) invalid", file=sys.stderr)
        return EXIT_INVALID
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.file is None:
        return runner(_export_from_server)(args)
    if args.version is not None:
        print("error: give FILE or --version N (a version on the server), not both",
              file=sys.stderr)
        return EXIT_USAGE
    bundle = _compiled(args)
    if bundle is None:
        return EXIT_INVALID
    return _write_export(args, bundle)


def _export_from_server(client: WardenClient, args: argparse.Namespace) -> int:
    number = args.version
    if number is None:
        active = [policy for policy in client.list_policies() if policy.active]
        if not active:
            print("error: the server has no active policy; push and activate one, or give "
                  "FILE or --version N", file=sys.stderr)
            return EXIT_INVALID
        number = active[0].version_number
    return _write_export(args, client.get_policy(number).bundle)


def _write_export(args: argparse.Namespace, bundle: dict[str, Any]) -> int:
    result = export(bundle, args.format)
    if args.output is not None:
        try:
            args.output.write_text(result.text, encoding="utf-8")
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        sys.stdout.write(result.text)
    print(f"{result.rules} {args.format} rule(s)", file=sys.stderr)
    for skipped in result.skipped:
        print(f"not exported: {skipped}", file=sys.stderr)
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([ValidationIssue(str(path), None, "", f"cannot read the file: {exc}",
                                           "check the path and that it is UTF-8 text")]) from exc


def _compiled(args: argparse.Namespace) -> dict[str, Any] | None:
    catalog = _catalog(args)
    if catalog is None:
        return None
    try:
        return compile_bundle(load_policy(args.file, catalog), catalog)
    except PolicyError as exc:
        _print_issues(exc)
        return None


def cmd_show(args: argparse.Namespace) -> int:
    bundle = _compiled(args)
    if bundle is None:
        return EXIT_INVALID
    if args.json:
        print(json.dumps(bundle, indent=2, sort_keys=True))
        return 0
    policy = bundle["policy"]
    print(f"policy   {policy['name']} ({policy['mode']})")
    print(f"version  {bundle['version']}")
    for app_id, rule in sorted(bundle["rules"].items()):
        alternative = f" -> use {rule['alternative']}" if rule["alternative"] else ""
        print(f"  {app_id:<12} {rule['verdict']:<6} {rule['action']}{alternative}")
        for exception in rule.get("exceptions", []):
            print(f"      {_exception_text(exception)}")
    return 0


def _exception_text(exception: dict[str, Any]) -> str:
    """'except hosts pc-1, pc-2; groups lab until 2026-12-31 (lapsed): pilot'."""
    who = "; ".join(f"{kind} {', '.join(exception[kind])}" for kind in ("hosts", "groups")
                    if exception.get(kind))
    lapsed = " (lapsed)" if dt.date.fromisoformat(exception["expires"]) < dt.date.today() else ""
    reason = f": {exception['reason']}" if exception.get("reason") else ""
    return f"except {who} until {exception['expires']}{lapsed}{reason}"


def observations_for(args: argparse.Namespace) -> list[Observation]:
    """Turn the one `--process/--exe/...` option into observations to evaluate."""
    if args.process:
        return [ProcessObservation(pid=0, name=args.process)]
    if args.exe:
        name = args.exe.replace("\\", "/").rsplit("/", 1)[-1]
        return [ProcessObservation(pid=0, name=name, exe=args.exe)]
    if args.package:
        return [InstalledObservation(source=source, id=args.package)  # type: ignore[arg-type]
                for source in _PACKAGE_SOURCES]
    if args.bundle_id:
        return [InstalledObservation(source="app_bundle", id=args.bundle_id)]
    if args.desktop_file:
        return [InstalledObservation(source="desktop", id=args.desktop_file)]
    return [_connection(args.connect)]


def _content(path: Path, bundle: dict[str, Any], os_name: OsName) -> InstalledObservation:
    """A file at rest with the content signatures its bytes match (strings only: version
    resources and code signatures are read by the agent on the machine)."""
    scan = ContentMatcher(bundle["apps"], os_name).scan()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(4 << 20):
                scan.feed(chunk)
    except OSError as error:
        raise SystemExit(f"warden: --content {str(path)!r}: cannot read it "
                         f"({error.strerror or error}); give a readable file") from None
    return InstalledObservation(source="file", id=str(path), path=str(path),
                                content=scan.matches())


def _connection(text: str) -> ConnectionObservation:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SystemExit(f"warden: --connect {text!r}: write it as IP:PORT, [IPv6]:PORT or "
                         "HOST:PORT with a port from 1 to 65535")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        return ConnectionObservation(remote_ip=host, remote_port=int(port_text))
    except ValueError:
        return ConnectionObservation(remote_ip="", remote_port=int(port_text), remote_host=host)


def cmd_test(args: argparse.Namespace) -> int:
    bundle = _compiled(args)
    if bundle is None:
        return EXIT_INVALID
    engine = Engine(bundle, HostContext(os=args.os, hostname=args.host,
                                        groups=frozenset(args.group)))
    findings: dict[str, Finding] = {}
    observations = [_content(args.content, bundle, args.os)] if args.content else \
        observations_for(args)
    for observation in observations:
        for finding in engine.evaluate(observation, include_allowed=True):
            findings.setdefault(finding.app, finding)
    if args.json:
        print(json.dumps({"findings": [{**f.as_dict(), "agent_does": describe_response(f)}
                                       for f in findings.values()]}, indent=2))
        return 0
    if not findings:
        print("no app in this policy matches: verdict none (not covered by the policy)")
        return 0
    for finding in findings.values():
        print(f"{finding.verdict}: {finding.app_name} ({finding.app})")
        print(f"  matched      {finding.matched} (confidence {finding.confidence})")
        print(f"  action       {finding.action} (policy mode {finding.mode})")
        for index, step in enumerate(describe_response(finding)):
            print(f"  {'agent does' if index == 0 else '':<12} {step}")
        if finding.alternative:
            alternative = bundle["apps"].get(finding.alternative, {})
            link = alternative.get("download_url") or alternative.get("homepage", "")
            print(f"  alternative  {alternative.get('name', finding.alternative)} {link}".rstrip())
        if finding.message:
            print(f"  message      {finding.message}")
    return 0


def cmd_catalog_list(args: argparse.Namespace) -> int:
    catalog = _catalog(args)
    if catalog is None:
        return EXIT_INVALID
    rows = [{"id": app.id, "name": app.name, "category": app.category,
             "signatures": app.signature_counts()} for app in catalog.values()]
    if args.json:
        print(json.dumps({"apps": rows}, indent=2))
        return 0
    header = ("ID", "NAME", "CATEGORY", "PROCESS", "INSTALLED", "NETWORK")
    print("{:<12} {:<12} {:<12} {:>7} {:>9} {:>7}".format(*header))
    for row in rows:
        counts = row["signatures"]
        assert isinstance(counts, dict)
        print(f"{row['id']:<12} {row['name']:<12} {row['category']:<12} {counts['process']:>7} "
              f"{counts['installed']:>9} {counts['network']:>7}")
    return 0
