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

from server.cli import maintenance_commands, server_commands

# Packages only the `server` extra installs: the commands that run the server import
# them when they run, so `warden policy validate` works on a machine without them.
SERVER_EXTRA = frozenset({"fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "jinja2",
                          "argon2", "prometheus_client", "multipart", "starlette"})


def build_parser(area: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; for `area` "server", only that area's commands: the others
    import the API client and the policy language (0.2 s), which a server start (and a
    refusal of its settings) does without."""
    parser = argparse.ArgumentParser(
        prog="warden", description="Warden administration: policies, server, findings, agents."
    )
    subparsers = parser.add_subparsers(dest="area", required=True, metavar="AREA")
    if area == "server":
        server_commands.register(subparsers)
        maintenance_commands.register(subparsers)
        return parser
    from server.cli import admin_commands, policy_commands, review_commands, user_commands

    policy_commands.register(subparsers)
    server_commands.register(subparsers)
    maintenance_commands.register(subparsers)  # adds `prune` under `warden server`
    user_commands.register(subparsers)
    admin_commands.register(subparsers)
    review_commands.register(subparsers)
    return parser


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
    given = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(given[0] if given else None)
    args, extras = parser.parse_known_args(given)
    if extras:
        # argparse leaves unknown options to the top parser, which would print the
        # top-level usage: say it with the usage of the command that was given.
        leaf_parser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in SERVER_EXTRA:
            raise
        print(f"warden: `warden {args.area}` needs the server's packages ({exc.name} is "
              "missing): install them with pip install 'warden[server]'", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
