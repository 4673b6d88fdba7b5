"""`warden server init|run`: set up a data directory, serve the API.

Settings come from the flags, then `WARDEN_*` variables, then the config
file (see server.settings). Exit codes: 0 done, 1 failed, 2 refused settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from server.settings import ServerSettings

EXIT_FAILED = 1
EXIT_SETTINGS = 2
# How long a stopping server waits for open connections. Over TLS, asyncio closes a
# connection only once the client answers its close_notify, or after 30 s; an agent's
# idle keep-alive socket never answers, so without a bound every stop took 30 s.
# Requests cut short here are safe: agents retry, and events are idempotent.
GRACEFUL_SHUTDOWN_SECONDS = 5


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    server = subparsers.add_parser("server", help="initialise and run the Warden server")
    actions = server.add_subparsers(dest="action", required=True, metavar="ACTION")

    init = actions.add_parser(
        "init", help="create the data directory, database, signing key, first token and secret")
    _data_dir_option(init)
    init.add_argument("--json", action="store_true",
                      help="print the result (and, on first run, the secrets) as JSON")
    init.set_defaults(func=cmd_init)

    run = actions.add_parser("run", help="serve the agent and admin API")
    _data_dir_option(run)
    run.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=None, help="port (default 8700)")
    run.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain")
    run.add_argument("--tls-key", type=Path, default=None, help="PEM private key")
    run.add_argument("--allow-insecure", action="store_true", default=None,
                     help="serve plain HTTP beyond loopback (only behind a TLS proxy)")
    run.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    run.set_defaults(func=cmd_run)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="the server's data directory (or WARDEN_DATA_DIR)")


def _settings(args: argparse.Namespace, **flags: Any) -> ServerSettings | None:
    """Settings from flags, env and config file; None (after saying why) if refused."""
    from server.settings import ServerSettings

    given = {name: value for name, value in flags.items() if value is not None}
    if args.data_dir is not None:
        given["data_dir"] = args.data_dir
    try:
        return ServerSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            print(f"warden: {where + ': ' if where else ''}{message}", file=sys.stderr)
        return None


def cmd_init(args: argparse.Namespace) -> int:
    from server.bootstrap import InitError, initialize

    settings = _settings(args)
    if settings is None:
        return EXIT_SETTINGS
    try:
        result = initialize(settings)
    except InitError as exc:
        print(f"warden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    elif result.initialized:
        print(f"Initialised {result.data_dir} (database {result.database}, "
              f"policy version {result.policy_version} active).")
        print("Keep these two secrets now; they are not shown again:")
        print(f"  admin API token:    {result.admin_token}")
        print(f"  enrollment secret:  {result.enroll_secret}")
    else:
        print(f"{result.data_dir} is already initialised (database {result.database}); "
              "nothing changed.")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import uvicorn

    from server import db
    from server.app import create_app
    from server.signing import SigningKeyError

    settings = _settings(args, host=args.host, port=args.port, tls_cert=args.tls_cert,
                         tls_key=args.tls_key, allow_insecure=args.allow_insecure)
    if settings is None:
        return EXIT_SETTINGS
    if not settings.signing_key_path.exists():
        print(f"warden: {settings.data_dir} is not initialised; run "
              f"`warden server init --data-dir {settings.data_dir}` first", file=sys.stderr)
        return EXIT_FAILED
    # A newer release may bring migrations; applying them at start keeps upgrades one step.
    engine = db.create_engine(settings.resolved_database_url)
    try:
        db.run_migrations(engine)
    finally:
        engine.dispose()
    try:
        app = create_app(settings)
    except SigningKeyError as exc:
        print(f"warden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level=args.log_level,
        # X-Forwarded-* is trusted only from loopback (uvicorn's default allow-list).
        proxy_headers=True,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0
