"""`warden-agent run | status | install-service`: the agent as a service.

`run` is what systemd / launchd / the Windows service starts. `status` reads
the state directory (and the status file a running agent refreshes at every
check-in), so it works whether or not the service is up.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from typing import Any

from agent.host.ownership import UntrustedPath
from agent.logs import configure_logging
from agent.service.install import add_install_service_parser
from agent.service.uninstall import add_uninstall_service_parser
from agent.settings import AgentSettings
from agent.state import StateDir
from agent.uplink.spool import Spool, SpoolError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = subparsers.add_parser(
        "run", help="run as the background service: enroll, sync policy, detect, act, report",
        description="Reads WARDEN_AGENT_SERVER_URL, WARDEN_AGENT_ENROLL_SECRET (or _FILE) and "
                    "WARDEN_AGENT_STATE_DIR, and the config file. Stops cleanly on SIGTERM.")
    run.set_defaults(func=run_command)
    status = subparsers.add_parser(
        "status", help="enrollment, policy, last sync, spool depth, each sensor's health")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=status_command)
    add_install_service_parser(subparsers)
    add_uninstall_service_parser(subparsers)


def run_command(args: argparse.Namespace, settings: AgentSettings) -> int:
    from agent.daemon import AgentDaemon  # the service's imports are not needed by `scan`
    from agent.host.memory import limit_arenas

    configure_logging(settings.log_level, settings.log_format, settings.log_file)
    limit_arenas()  # before the service's threads start
    try:
        daemon = AgentDaemon(settings)
    except (ValueError, SpoolError, OSError) as exc:
        print(f"warden-agent: cannot start: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILED
    return daemon.run()


def collect_status(settings: AgentSettings) -> dict[str, Any]:
    state_dir = settings.state_dir
    report: dict[str, Any] = {"state_dir": str(state_dir), "server_url": settings.server_url}
    if not state_dir.exists():
        return {**report, "enrolled": False, "problem": "state directory does not exist yet"}
    state = StateDir(state_dir)
    identity = state.load_identity()
    report["enrolled"] = identity is not None
    report["agent_id"] = identity.agent_id if identity else None
    # The key policies must be signed with (moved on only by signed key rotations).
    report["policy_public_key"] = (base64.b64encode(identity.policy_public_key).decode()
                                   if identity else None)
    policy_path = state_dir / "policy.json"
    if policy_path.exists():
        cached = json.loads(policy_path.read_text(encoding="utf-8"))
        bundle = cached["bundle"]
        report["policy_version"] = bundle.get("version")
        report["policy_mode"] = bundle.get("policy", {}).get("mode")
        # The server's activation serial: a policy with a lower one is refused as a replay.
        report["policy_serial"] = (cached.get("activation") or {}).get("serial")
    else:
        report["policy_version"] = None
    if state.spool_path.exists():
        spool = Spool(state.spool_path)
        try:
            report["spool_depth"] = spool.depth()
            report["dropped_events"] = spool.dropped()
        finally:
            spool.close()
    status_path = state_dir / "status.json"
    if status_path.exists():
        running = json.loads(status_path.read_text(encoding="utf-8"))
        if (running.get("policy_number") is not None
                and running.get("policy_number_of") == report.get("policy_version")):
            report["policy_number"] = running["policy_number"]
        for name in ("last_checkin", "last_upload", "open_findings", "policy_error",
                     "last_error", "uploaded_events", "written_at", "backoff_factor",
                     "sensors"):
            report[name] = running.get(name)
    return report


def status_command(args: argparse.Namespace, settings: AgentSettings) -> int:
    try:
        report = collect_status(settings)
    except UntrustedPath as exc:  # a state dir someone else could have written: not read
        print(f"warden-agent: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError, SpoolError) as exc:
        print(f"warden-agent: cannot read the state in {settings.state_dir}: {exc}",
              file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK

    def when(value: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value)) if value else "never"

    print(f"state dir       {report['state_dir']}")
    print(f"server          {report['server_url'] or '(not configured)'}")
    print(f"enrolled        {'yes, agent ' + report['agent_id'] if report['enrolled'] else 'no'}")
    if report.get("policy_public_key"):
        print(f"signing key     {report['policy_public_key']}")
    version = report.get("policy_version")
    serial = f", activation {report['policy_serial']}" if report.get("policy_serial") else ""
    number = f"v{report['policy_number']} " if report.get("policy_number") else ""
    policy = (f"{number}{version[:12]} ({report.get('policy_mode')}{serial})" if version
              else "none from the server yet (the embedded default is in force)")
    print(f"policy          {policy}")
    print(f"last check-in   {when(report.get('last_checkin'))}")
    print(f"last upload     {when(report.get('last_upload'))}")
    print(f"spool           {report.get('spool_depth', 0)} waiting, "
          f"{report.get('dropped_events', 0)} dropped")
    print(f"open findings   {report.get('open_findings', 'unknown (service not running)')}")
    for name in ("policy_error", "last_error"):
        if report.get(name):
            print(f"{name.replace('_', ' '):<15} {report[name]}")
    for line in sensor_lines(report.get("sensors")):
        print(line)
    return EXIT_OK


def sensor_lines(sensors: dict[str, Any] | None) -> list[str]:
    """`sensor process  ok (last good scan ...)`, one line per sensor; a problem says why."""
    if not sensors:
        return []
    lines = []
    for name, health in sorted(sensors.items()):
        last = health.get("last_ok") or "never"
        line = f"{'sensor ' + name:<15} {health.get('state')} (last good scan {last})"
        if health.get("detail"):
            line += f": {health['detail']}"
        lines.append(line)
    return lines
