"""`warden server prune`: delete events and resolved findings older than the retention.

Meant for cron or a one-off clean-up; a running server also prunes once a day.
Runs beside a live server: each batch is a short transaction of its own.
Exit codes: 0 done (or nothing to do), 1 failed, 2 refused settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.cli.server_commands import EXIT_FAILED, EXIT_SETTINGS, _settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `prune` to `warden server`; server_commands must be registered first."""
    server = subparsers.choices.get("server")
    if server is None:
        raise RuntimeError("register server_commands before maintenance_commands")
    prune = _actions_of(server).add_parser(
        "prune", help="delete events and resolved findings older than the retention period",
        description="Delete events received, and findings resolved, more than N days ago "
                    "(default: the retention_days setting, WARDEN_RETENTION_DAYS, else 180). "
                    "Open findings are never deleted. Safe while the server runs.")
    prune.add_argument("--data-dir", type=Path, default=None,
                       help="the server's data directory (or WARDEN_DATA_DIR)")
    prune.add_argument("--days", type=_days, default=None,
                       help="keep this many days (overrides retention_days)")
    prune.add_argument("--dry-run", action="store_true",
                       help="count what would be deleted; delete nothing")
    prune.add_argument("--json", action="store_true", help="print the counts as JSON")
    prune.set_defaults(func=cmd_prune)


def _actions_of(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[
        argparse.ArgumentParser]:
    # argparse offers no public way back to a parser's sub-commands.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"{parser.prog} has no sub-commands")


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of days: {value!r}") from None
    if days < 1:
        raise argparse.ArgumentTypeError("keep at least 1 day")
    return days


def cmd_prune(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from server import db
    from server.jobs.pruning import prune, retention_days

    settings = _settings(args)
    if settings is None:
        return EXIT_SETTINGS
    if not settings.signing_key_path.exists():
        print(f"warden: {settings.data_dir} is not initialised; nothing to prune",
              file=sys.stderr)
        return EXIT_FAILED
    days = args.days or retention_days(settings)
    engine = db.create_engine(settings.resolved_database_url)
    try:
        # Counting takes no write lock: a dry run never makes ingestion wait on SQLite.
        sessions = db.session_factory(engine if args.dry_run else db.writer(engine))
        report = prune(sessions, days, dry_run=args.dry_run)
    except sa.exc.SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"warden: pruning failed: {cause.__class__.__name__}: {cause}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    verb = "Would delete" if report.dry_run else "Deleted"
    print(f"{verb} {report.events} events and {report.findings} resolved findings older "
          f"than {days} days (before {report.cutoff:%Y-%m-%d %H:%M} UTC).")
    return 0
