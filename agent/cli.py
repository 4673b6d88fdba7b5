"""`warden-agent`: the endpoint agent's command line.

Sub-commands register themselves through ``register(subparsers)`` and set
``func`` on their parsers, as the admin CLI does; this module registers the
detection commands (`scan`, `watch`). The service commands (`run`, `status`,
`install-service`) come from their own module, added in `build_parser`.

Exit codes:
  0  nothing denied (scan), or stopped cleanly by SIGINT/SIGTERM (watch)
  1  the policy (or catalog) cannot be used; its issues are printed to stderr
  2  usage error, or invalid agent settings (environment / config file)
  3  scan found at least one app the policy denies

Every command receives the AgentSettings built once in `main`, with the
command line's options laid over the environment and the config file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from agent.host.platform import current_os, host_context, is_privileged
from agent.scanning.one_scan import ScanResult, scan_once
from agent.scanning.scanner import Watch
from agent.scanning.sensor_set import SensorChoice, Sensors, WatchTiming
from agent.service import cli as cli_service
from agent.settings import AgentSettings, SettingsError, load_settings
from agent.uplink.request_socket import send_request
from policies.compiler import compile_bundle
from policies.engine import Engine
from policies.errors import PolicyError
from policies.loader import default_policy_path, load_catalog, load_policy
from policies.vocabulary import OS_NAMES, OsName

EXIT_OK = 0
EXIT_BAD_POLICY = 1
EXIT_USAGE = 2
EXIT_DENIED = 3

REQUEST_SOCKET_VAR = "WARDEN_AGENT_REQUEST_SOCKET"
DEFAULT_REQUEST_SOCKET = "/run/warden-agent/request.sock"

Subparsers = argparse._SubParsersAction  # the type argparse gives add_subparsers()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warden-agent",
        description="Warden endpoint agent: detect banned messaging apps on this machine.",
        epilog="Exit codes: 0 nothing denied, 1 unusable policy, 2 usage error or invalid "
               "settings, 3 a denied app was found (scan).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(subparsers)
    cli_service.register(subparsers)
    return parser


def register(subparsers: Subparsers[argparse.ArgumentParser]) -> None:
    request = subparsers.add_parser(
        "request-exception", help="ask the administrators to allow an app on this machine",
        description="Sends the request to the running agent, which forwards it to the "
                    "server; you are told the answer by a notification.")
    request.add_argument("--app", required=True, help="the app's id, e.g. telegram")
    request.add_argument("--days", required=True, type=int, help="for how long (1 to 365)")
    request.add_argument("--reason", required=True, help="why you need it")
    request.add_argument("--socket", type=Path, default=None,
                         help="the agent's request socket (default: "
                              f"${REQUEST_SOCKET_VAR} or {DEFAULT_REQUEST_SOCKET})")
    scan = subparsers.add_parser(
        "scan", help="scan this machine once and print what the policy says about it",
        description="One full pass of every sensor. Exit 3 when a denied app is found.")
    scan.add_argument("--once", action="store_true",
                      help="one pass and exit (the only mode; accepted for scripts)")
    _add_common(scan)
    scan.set_defaults(func=_scan)

    watch = subparsers.add_parser(
        "watch", help="follow this machine and print findings as they open and resolve",
        description="Runs the sensors until SIGINT/SIGTERM; one JSON object a line with --json.")
    _add_common(watch)
    watch.add_argument("--process-interval", type=_positive, metavar="SECONDS",
                       help="how often new processes are looked for (setting process_interval)")
    watch.add_argument("--network-interval", type=_positive, metavar="SECONDS",
                       help="minimum time between two network listings, which are costly "
                       "(setting network_interval)")
    watch.set_defaults(func=_watch)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--policy", type=Path, metavar="FILE",
                        help="policy file (default: the installed default policy)")
    parser.add_argument("--root", type=_directory, default=Path("/"), metavar="DIR",
                        help="look for installed apps under DIR (a mounted image, a test tree)")
    parser.add_argument("--os", choices=OS_NAMES, dest="os_name",
                        help="judge as this OS (default: the running one), e.g. with --root")
    parser.add_argument("--no-processes", dest="processes", action="store_false",
                        help="do not look at running processes")
    parser.add_argument("--no-installed", dest="installed", action="store_false", default=None,
                        help="do not look for installed apps")
    parser.add_argument("--no-content", dest="content", action="store_false",
                        help="do not identify executables by their content (content signatures)")
    parser.add_argument("--no-network", dest="network", action="store_false", default=None,
                        help="do not look at network connections")


# Command-line options that, when given, override the setting of the same name.
_SETTING_OPTIONS = ("process_interval", "network_interval", "installed", "network")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "request-exception":
        # Run by an ordinary user, who may not read the agent's settings: the socket is all
        # it needs, and the running agent checks everything else.
        return _request_exception(args)
    overrides = {name: value for name in _SETTING_OPTIONS
                 if (value := getattr(args, name, None)) is not None}
    try:
        settings = load_settings(**overrides)
    except SettingsError as exc:
        print(f"warden-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result: int = args.func(args, settings)
    except KeyboardInterrupt:  # before `watch` took over SIGINT, or during `scan`
        return 130
    return result


# -- commands ---------------------------------------------------------------


def _request_exception(args: argparse.Namespace) -> int:
    path = args.socket or Path(os.environ.get(REQUEST_SOCKET_VAR) or DEFAULT_REQUEST_SOCKET)
    try:
        answer = send_request(path, args.app, args.days, args.reason)
    except (OSError, ValueError) as exc:
        print(f"warden-agent: cannot reach the agent at {path}: {exc}; is the Warden agent "
              "service running?", file=sys.stderr)
        return EXIT_BAD_POLICY
    if not answer.get("ok"):
        print(f"warden-agent: request refused: {answer.get('error')}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Request {answer.get('request_id')} sent: {args.app} for {args.days} days. "
          "You will be told the administrators' answer.")
    return EXIT_OK


def _scan(args: argparse.Namespace, settings: AgentSettings) -> int:
    engine = _engine(args)
    if engine is None:
        return EXIT_BAD_POLICY
    timing = WatchTiming.from_settings(settings)
    sensors = Sensors.build(engine, _choice(args, settings), is_privileged(), timing)
    # A stalled sensor is reported (JSON `sensors`, stderr) beside what the others found.
    result = scan_once(engine, sensors, deadline=timing.sensor_deadline)
    if args.json:
        print(json.dumps(result.as_dict()))
        # Said on stderr too: a script reading only the findings must still see it.
        for name, health in result.sensors.items():
            if health.state != "ok":
                print(f"warning: the {name} sensor is {health.state}: {health.detail}",
                      file=sys.stderr)
    else:
        print(render_table(result, engine))
        for message in result.warnings:
            print(f"warning: {message}", file=sys.stderr)
    return EXIT_DENIED if result.denied else EXIT_OK


def _watch(args: argparse.Namespace, settings: AgentSettings) -> int:
    engine = _engine(args)
    if engine is None:
        return EXIT_BAD_POLICY
    timing = WatchTiming.from_settings(settings)
    sensors = Sensors.build(engine, _choice(args, settings), is_privileged(), timing)
    emit = _emit_json if args.json else _human_emitter(engine)
    watch = Watch(engine, sensors, emit, timing=timing, warn=_warn)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        watch.request_stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        watch.start()
        _warn(f"watching with policy {engine.version[:12]} (stop with Ctrl-C)", prefix="")
        watch.run_loop()
    except BrokenPipeError:
        # Whoever read our output has gone (e.g. `| head`): nothing left to tell.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        watch.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return EXIT_OK


# -- helpers ----------------------------------------------------------------


def _engine(args: argparse.Namespace) -> Engine | None:
    os_name: OsName = args.os_name or current_os()
    try:
        catalog = load_catalog()
        policy = load_policy(args.policy or default_policy_path(), catalog)
    except PolicyError as exc:
        print("warden-agent: the policy cannot be used:", file=sys.stderr)
        for issue in exc.issues:
            print(f"  {issue}", file=sys.stderr)
        return None
    return Engine(compile_bundle(policy, catalog), host_context(os_name=os_name))


def _choice(args: argparse.Namespace, settings: AgentSettings) -> SensorChoice:
    return SensorChoice(processes=args.processes, installed=settings.installed,
                        network=settings.network, root=args.root,
                        content=settings.content and args.content,
                        content_read_rate=settings.content_read_rate,
                        content_max_file_bytes=settings.content_max_file_bytes,
                        content_skip_packaged=settings.content_skip_packaged)


def _directory(value: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return path


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"{value!r} must be more than 0")
    return number


def _warn(message: str, prefix: str = "warning: ") -> None:
    print(f"{prefix}{message}", file=sys.stderr, flush=True)


def _emit_json(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _human_emitter(engine: Engine) -> Callable[[dict[str, Any]], None]:
    def emit(event: dict[str, Any]) -> None:
        line = (f"{event['time']}  {event['event'].upper():8}  {event['app_name']} "
                f"({event['verdict']}, {event['action']}) {event['sensor']}: "
                f"{evidence_summary(event['sensor'], event['evidence'])}")
        alternative = _app_name(engine, event.get("alternative"))
        if event["event"] == "opened" and alternative:
            line += f"  -> use {alternative} instead"
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return emit


def evidence_summary(sensor: str, evidence: dict[str, Any]) -> str:
    """One short line saying what was seen."""
    if sensor == "process":
        return f"pid {evidence.get('pid')} {evidence.get('exe') or evidence.get('name')}" + (
            f" (user {evidence['username']})" if evidence.get("username") else "")
    if sensor == "installed":
        where = f" at {evidence['path']}" if evidence.get("path") else ""
        return f"{evidence.get('source')} {evidence.get('id')}{where}"
    owner = f" by {evidence.get('process_name') or '?'} (pid {evidence['pid']})" \
        if evidence.get("pid") else ""
    host = f" ({evidence['remote_host']})" if evidence.get("remote_host") else ""
    return f"connection to {evidence.get('remote_address')}{host}{owner}"


def render_table(result: ScanResult, engine: Engine) -> str:
    """The scan as a table, then what to do instead of each denied app."""
    if not result.findings:
        return "No banned or flagged apps found."
    header = ("APP", "VERDICT", "ACTION", "SENSOR", "CONFIDENCE", "EVIDENCE")
    rows = [(f.app_name, f.verdict, f.action, f.sensor, f.confidence,
             evidence_summary(f.sensor, f.evidence)) for f in result.findings]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
             for row in (header, *rows)]
    lines.append("")
    for app, alternative, message in sorted({(f.app_name, f.alternative, f.message)
                                             for f in result.findings if f.verdict == "deny"},
                                            key=lambda item: item[0]):
        lines.append(message.strip() or f"{app} is not allowed on this machine.")
        if alternative:
            lines.append(_alternative_hint(engine, alternative))
    return "\n".join(lines).rstrip()


def _app_name(engine: Engine, app_id: str | None) -> str | None:
    if not app_id:
        return None
    name = engine.apps.get(app_id, {}).get("name")
    return name if isinstance(name, str) else app_id


def _alternative_hint(engine: Engine, app_id: str) -> str:
    app = engine.apps.get(app_id, {})
    text = f"Use {_app_name(engine, app_id)} instead"
    if app.get("download_url"):
        text += f": {app['download_url']}"
    hint = app.get("install_hints", {}).get(engine.host.os)
    return f"{text}\n  {hint}" if hint else text


if __name__ == "__main__":
    sys.exit(main())
