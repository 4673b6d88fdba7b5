"""`warden server init|run|public-key|rotate-key`: set up a data directory, serve the API,
hand out and rotate the policy-signing key (server.crypto.key_rotation).

Settings come from the flags, then `WARDEN_*` variables, then the config
file (see server.settings). Exit codes: 0 done, 1 failed, 2 refused settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

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
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="server processes to run on the one port (default 1; more than "
                     "one needs PostgreSQL: WARDEN_DATABASE_URL)")
    run.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    run.set_defaults(func=cmd_run)

    public_key = actions.add_parser(
        "public-key", help="print the policy-signing public key, for agents to pin "
        "(WARDEN_AGENT_POLICY_PUBLIC_KEY)")
    _data_dir_option(public_key)
    public_key.add_argument("--json", action="store_true",
                            help="the key, its fingerprint and every rotation that led to it")
    public_key.set_defaults(func=cmd_public_key)

    rotate = actions.add_parser(
        "rotate-key", help="replace the policy-signing key; agents move to the new key by "
        "themselves (running servers pick it up)")
    _data_dir_option(rotate)
    rotate.add_argument("--json", action="store_true", help="print the result as JSON")
    rotate.set_defaults(func=cmd_rotate_key)


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
    # First, so a machine without the server's packages is told to install them (main).
    import uvicorn

    def finish(session: Session, settings: ServerSettings) -> int:
        from server.crypto.key_rotation import finish_rotation

        finished = finish_rotation(session, settings.signing_key_path)
        if finished:
            print(f"warden: {finished}", file=sys.stderr)
        return 0

    flags = {"host": args.host, "port": args.port, "tls_cert": args.tls_cert,
             "tls_key": args.tls_key, "allow_insecure": args.allow_insecure,
             "workers": args.workers, "data_dir": args.data_dir}
    settings = _settings(args, **flags)
    # Migrations first (a newer release may bring some; applying them at start keeps
    # upgrades one step), then a key rotation that stopped half-way is finished.
    failed = _on_database(settings, finish)
    if failed or settings is None:
        return failed
    # The web app's modules (0.6 s of CPU to import) only once the settings and the data
    # dir are known good: a refusal is said at once.
    from server import workers as app_workers
    from server.app import create_app
    from server.crypto.signing import SigningKeyError

    try:
        # Built here even for workers: a missing key fails once, clearly, not N times.
        app = create_app(settings)
    except SigningKeyError as exc:
        print(f"warden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    target: Any = app
    if settings.workers > 1:
        app_workers.pass_flags(flags)
        target = app_workers.FACTORY
        app.state.context.engine.dispose()  # the supervisor serves nothing itself
    uvicorn.run(
        target,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=settings.host,
        port=settings.port,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        log_level=args.log_level,
        # X-Forwarded-* is trusted from settings.trusted_proxies only, by the app itself.
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


def cmd_public_key(args: argparse.Namespace) -> int:
    from server.crypto.key_rotation import key_state

    def show(session: Session, settings: ServerSettings) -> int:
        state = key_state(session, settings.signing_key_path)
        if state.retired:
            print(f"warden: {settings.signing_key_path} still holds a retired key (an "
                  "interrupted rotation); `warden server run` or `rotate-key` installs the "
                  "current one", file=sys.stderr)
        if args.json:
            print(json.dumps(state.as_dict(), indent=2))
        else:
            print(state.current)
        return 0

    return _on_database(_settings(args), show)


def cmd_rotate_key(args: argparse.Namespace) -> int:
    from server.cli.user_commands import _actor
    from server.crypto.key_rotation import rotate
    from server.crypto.signing import fingerprint

    def run(session: Session, settings: ServerSettings) -> int:
        report = rotate(session, settings.signing_key_path, actor=_actor())
        if args.json:
            print(json.dumps(report.as_dict(), indent=2))
            return 0
        done = report.rotation
        if report.finished:
            print(f"First {report.finished}.")
        print(f"Rotated the policy-signing key {fingerprint(done.previous_public_key)} -> "
              f"{fingerprint(done.public_key)}; the old key signed the statement agents "
              "follow to the new one.")
        print(f"New public key (for WARDEN_AGENT_POLICY_PUBLIC_KEY): {done.public_key}")
        print(f"Re-signed policy versions: {_numbers(done.resigned)}; "
              f"activation serial: {done.activation_serial or 'none (no active policy)'}.")
        if done.not_resigned:
            print(f"warden: NOT re-signed: versions {_numbers(done.not_resigned)} (their "
                  "stored signature does not verify with the old key: changed in the "
                  "database?); agents refuse them", file=sys.stderr)
        print(f"Kept: {report.kept_old.name} (old), {report.kept_new.name} (new). Servers on "
              "other hosts need the new policy-signing.key; agents move at their next "
              "check-in.")
        return 0

    return _on_database(_settings(args), run)


def _on_database(settings: ServerSettings | None,
                 work: Callable[[Session, ServerSettings], int]) -> int:
    """Run `work` with a session on the initialised data directory's migrated database;
    its exit code, or why it could not run."""
    if settings is None:
        return EXIT_SETTINGS
    if not settings.signing_key_path.exists():
        print(f"warden: {settings.data_dir} is not initialised; run "
              f"`warden server init --data-dir {settings.data_dir}` first", file=sys.stderr)
        return EXIT_FAILED
    import sqlalchemy as sa

    from server import db
    from server.crypto.signing import SigningKeyError

    engine = db.create_engine(settings.resolved_database_url)
    try:
        db.run_migrations(engine)
        with db.session_factory(db.writer(engine))() as session:
            return work(session, settings)
    except (SigningKeyError, sa.exc.SQLAlchemyError) as exc:
        print(f"warden: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        engine.dispose()


def _numbers(numbers: list[int]) -> str:
    return ", ".join(map(str, numbers)) or "none"
