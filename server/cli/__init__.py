"""`warden`: the administrator's command line.

Sub-commands live in one module per area; each module exposes
``register(subparsers)`` and sets ``func`` on its parsers. Heavy imports (web
framework, database) stay inside the commands that need them, so `warden
policy validate` starts fast and works without a server.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from server.cli import policy_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warden", description="Warden administration: policies, server, findings, agents."
    )
    subparsers = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    policy_commands.register(subparsers)
    _register_optional(subparsers)
    return parser


def _register_optional(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Server-side areas need the `server` extra; keep `warden policy` usable without it.
    try:
        from server.cli import server_commands
    except ImportError:
        return
    server_commands.register(subparsers)
    from server.cli import maintenance_commands  # adds `prune` under `warden server`

    maintenance_commands.register(subparsers)
    from server.cli import user_commands

    user_commands.register(subparsers)
    try:
        from server.cli import admin_commands
    except ImportError:
        return
    admin_commands.register(subparsers)


def leaf_parser(parser: argparse.ArgumentParser,
                args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the sub-command `args` came from (`warden agents revoke`'s)."""
    for dest in ("area", "action"):
        subparsers = next((action for action in parser._actions
                           if isinstance(action, argparse._SubParsersAction)), None)
        chosen = getattr(args, dest, None)
        if subparsers is None or chosen not in subparsers.choices:
            break
        parser = subparsers.choices[chosen]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        # argparse leaves unknown options to the top parser, which would print the
        # top-level usage: say it with the usage of the command that was given.
        leaf_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
