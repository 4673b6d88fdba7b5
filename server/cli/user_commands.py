"""`warden users create|list|disable|enable`: dashboard accounts.

Through the API like every other area (`--url`, `--token`: an admin token), or,
with `--data-dir` (or WARDEN_DATA_DIR), straight in the server's database: creating
the first person who can log in to the dashboard must not need a running server or
a token. The password is read from
`--password-file`, else asked twice on a terminal, else read as one line
from standard input (for scripts: `printf '%s\\n' "$PW" | warden users create …`).
Passwords are stored as argon2 hashes only. Every change lands in the audit log.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pydantic import ValidationError

from policies.vocabulary import ROLES
from server.crypto.hashing import password_problem

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from server.api_client import WardenClient
    from server.settings import ServerSettings

EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from server.cli.admin_runner import connection_options

    connection = connection_options()
    users = subparsers.add_parser("users", help="dashboard accounts: create, list, disable")
    actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")

    create = actions.add_parser("create", help="add a person who can log in to the dashboard",
                                parents=[connection])
    _data_dir_option(create)
    create.add_argument("--username", required=True)
    create.add_argument("--role", required=True, choices=ROLES,
                        help="viewer reads; analyst also triages; admin does everything")
    create.add_argument("--password-file", type=Path, metavar="FILE",
                        help="read the password from the first line of FILE "
                             "(default: ask, or read a line from standard input)")
    create.set_defaults(func=_either(cmd_create, api_create), usage_of=create)

    listing = actions.add_parser("list", help="list dashboard accounts", parents=[connection])
    _data_dir_option(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    listing.set_defaults(func=_either(cmd_list, api_list), usage_of=listing)

    for name, disabled in (("disable", True), ("enable", False)):
        toggle = actions.add_parser(
            name, help=f"{name} an account ({'ends' if disabled else 'allows'} its logins)",
            parents=[connection])
        _data_dir_option(toggle)
        toggle.add_argument("--username", required=True)
        toggle.set_defaults(func=_either(_toggle(disabled), _api_toggle(disabled)),
                            usage_of=toggle)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="work on the server's data directory (or WARDEN_DATA_DIR) "
                             "instead of through the API; for the first account")


def _either(local: Callable[[argparse.Namespace], int],
            remote: Callable[[WardenClient, argparse.Namespace], int]
            ) -> Callable[[argparse.Namespace], int]:
    """The database when a data directory is named, else the API (an admin token)."""
    from server.cli.admin_runner import runner

    through_api = runner(remote)

    def run(args: argparse.Namespace) -> int:
        if args.data_dir is not None or os.environ.get("WARDEN_DATA_DIR"):
            return local(args)
        return through_api(args)

    return run


def api_create(client: WardenClient, args: argparse.Namespace) -> int:
    if not args.username.strip() or len(args.username) > 255:
        return _fail("the username must be 1 to 255 characters", EXIT_USAGE)
    try:
        password = read_password(args.password_file, sys.stdin)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    user = client.create_user(args.username.strip(), password, args.role)
    print(f"Created {user.role} {user.username!r} (user {user.id}); they can log in now.")
    return 0


def api_list(client: WardenClient, args: argparse.Namespace) -> int:
    from server.cli.admin_output import show, when

    return show(args, client.list_users(), "no dashboard accounts yet; add one with "
                "`warden users create`", [
        ("USERNAME", lambda u: u.username), ("ROLE", lambda u: u.role),
        ("STATE", lambda u: "disabled" if u.disabled else "active"),
        ("CREATED", lambda u: when(u.created_at))])


def _api_toggle(disabled: bool) -> Callable[[WardenClient, argparse.Namespace], int]:
    def command(client: WardenClient, args: argparse.Namespace) -> int:
        user = next((user for user in client.list_users() if user.username == args.username),
                    None)
        if user is None:
            return _fail(f"there is no user named {args.username!r}")
        changed = client.set_user_disabled(user.id, disabled)
        print(f"{'Disabled' if disabled else 'Enabled'} {changed.username!r}.")
        return 0

    return command


def cmd_create(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from server.store import users

    if not args.username.strip() or len(args.username) > 255:
        return _fail("the username must be 1 to 255 characters", EXIT_USAGE)
    try:
        password = read_password(args.password_file, sys.stdin)
    except (OSError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)

    def create(session: Session) -> str:
        user = users.create(session, username=args.username.strip(), password=password,
                            role=args.role, actor=_actor())
        return f"Created {args.role} {user.username!r} (user {user.id}); they can log in now."

    try:
        return _with_database(args, create)
    except IntegrityError:
        return _fail(f"there is already a user named {args.username!r}")


def cmd_list(args: argparse.Namespace) -> int:
    from server.store import users

    def listing(session: Session) -> str:
        rows = users.list_all(session)
        if not rows:
            return "No dashboard accounts yet; add one with `warden users create`."
        width = max(len("username"), *(len(row.username) for row in rows))
        lines = [f"{'username':<{width}}  role     state     created"]
        lines += [f"{row.username:<{width}}  {row.role:<7}  "
                  f"{'disabled' if row.disabled else 'active':<8}  "
                  f"{row.created_at:%Y-%m-%d %H:%M}" for row in rows]
        return "\n".join(lines)

    return _with_database(args, listing)


def _toggle(disabled: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from server.store import users

        def change(session: Session) -> str:
            user = users.get_by_username(session, args.username)
            if user is None:
                raise LookupError(f"there is no user named {args.username!r}")
            users.set_disabled(session, user.id, disabled, actor=_actor())
            return f"{'Disabled' if disabled else 'Enabled'} {user.username!r}."

        try:
            return _with_database(args, change)
        except LookupError as exc:
            return _fail(str(exc))

    return command


def read_password(path: Path | None, stdin: IO[str],
                  ask: Callable[[str], str] = getpass.getpass) -> str:
    """The new password, from a file, a terminal prompt (twice) or a line of stdin."""
    if path is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        password = lines[0] if lines else ""
    elif stdin.isatty():
        password = ask("Password: ")
        if ask("Password again: ") != password:
            raise ValueError("the two passwords differ")
    else:
        password = stdin.readline().rstrip("\r\n")
    problem = password_problem(password)
    if problem:
        raise ValueError(problem)
    return password


def _with_database(args: argparse.Namespace, work: Callable[[Session], str]) -> int:
    """Run `work` in one write transaction on the data directory's database; print its text."""
    from server import db

    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    if not settings.signing_key_path.exists():
        return _fail(f"{settings.data_dir} is not initialised; run "
                     f"`warden server init --data-dir {settings.data_dir}` first")
    engine = db.create_engine(settings.resolved_database_url)
    try:
        db.run_migrations(engine)  # a newer release may bring the tables this needs
        with db.session_factory(db.writer(engine))() as session:
            message = work(session)
            session.commit()
    finally:
        engine.dispose()
    print(message)
    return 0


def _settings(args: argparse.Namespace) -> ServerSettings | None:
    from server.settings import ServerSettings

    given: dict[str, Any] = {}
    if args.data_dir is not None:
        given["data_dir"] = args.data_dir
    try:
        return ServerSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            print(f"warden: {where + ': ' if where else ''}"
                  f"{error['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return None


def _actor() -> str:
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "unknown"
    return f"cli:{who}"


def _fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"warden: {message}", file=sys.stderr)
    return code
