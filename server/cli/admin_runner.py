"""How an admin command runs: the shared connection options, credentials, one client per
run, and every failure turned into one line on stderr and an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from server.api_client import ApiError, WardenClient, WardenClientError
from server.cli.admin_output import EXIT_API, EXIT_USAGE, api_failure, fail
from server.cli.credentials import config_path, resolve_credentials

Command = Callable[[WardenClient, argparse.Namespace], int]


def connection_options() -> argparse.ArgumentParser:
    """A parent parser with the options every command that talks to the server takes."""
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("server connection")
    group.add_argument("--url", help="server URL (default: $WARDEN_URL, the config file, "
                       "or http://127.0.0.1:8700)")
    group.add_argument("--token", help="API token (default: $WARDEN_TOKEN or the config file)")
    group.add_argument("--ca-bundle", metavar="FILE",
                       help="CA certificates for a server with a private CA")
    group.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for the server to answer (default: 10)")
    return connection


def runner(command: Command) -> Callable[[argparse.Namespace], int]:
    """`command` as an argparse `func`: connect, run it, close, and map failures to exits."""
    def run(args: argparse.Namespace) -> int:
        status = _run(args)
        usage_of = getattr(args, "usage_of", None)
        if status == EXIT_USAGE and isinstance(usage_of, argparse.ArgumentParser):
            # A usage problem found by the command: show that command's usage, as argparse
            # does for its own.
            usage_of.print_usage(sys.stderr)
        return status

    def _run(args: argparse.Namespace) -> int:
        try:
            credentials = resolve_credentials(args.url, args.token, args.ca_bundle)
        except WardenClientError as exc:
            return fail(str(exc), EXIT_USAGE)
        if not credentials.token:
            return fail(f"no API token: pass --token, set WARDEN_TOKEN, or write "
                         f'{{"url": ..., "token": ...}} to {config_path()}', EXIT_USAGE)
        client = WardenClient(credentials.url, credentials.token, timeout=args.timeout,
                              ca_bundle=credentials.ca_bundle)
        try:
            return command(client, args)
        except ApiError as exc:
            return api_failure(exc)
        except WardenClientError as exc:
            return fail(str(exc), EXIT_API)
        except BrokenPipeError:
            # `warden findings list | head`: the reader left; stop quietly.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_API
        except OSError as exc:
            return fail(f"cannot write the output: {exc}", EXIT_API)
        finally:
            client.close()

    return run
