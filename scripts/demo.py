"""`make demo`: a Warden server on SQLite plus a local agent, and something to find.

Starts `warden server run` on 127.0.0.1:8700 with its data in ./demo-data, a
`warden-agent run` enrolled to it, and a harmless stand-in for Telegram (a copy
of `sleep` named `telegram-desktop`), then prints where to look. Ctrl-C stops
everything; the data stays for the next run.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "demo-data"
BIN = Path(sys.executable).parent
HOST, PORT = "127.0.0.1", int(os.environ.get("WARDEN_DEMO_PORT", "8700"))
URL = f"http://{HOST}:{PORT}"


def run(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=True, capture_output=True, text=True,
                          **kwargs)  # type: ignore[call-overload]


def initialise() -> dict[str, str]:
    """Initialise once; keep the one-time secrets so later runs can reuse them."""
    secrets_file = DATA / "demo-secrets.json"
    if secrets_file.exists():
        return dict(json.loads(secrets_file.read_text()))
    result = json.loads(run(str(BIN / "warden"), "server", "init", "--data-dir",
                            str(DATA / "server"), "--json").stdout)
    password = secrets.token_urlsafe(12)
    run(str(BIN / "warden"), "users", "create", "--data-dir", str(DATA / "server"),
        "--username", "admin", "--role", "admin", input=password + "\n")
    demo = {"admin_token": result["admin_token"], "enroll_secret": result["enroll_secret"],
            "username": "admin", "password": password}
    secrets_file.write_text(json.dumps(demo, indent=2))
    secrets_file.chmod(0o600)
    return demo


def wait_healthy(server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server stopped; see {log}:\n{log.read_text()[-2000:]}")
        try:
            if requests.get(f"{URL}/healthz", timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    sys.exit(f"the server did not answer on {URL}; see {log}")


def main() -> int:
    DATA.mkdir(exist_ok=True)
    demo = initialise()
    logs = DATA / "logs"
    logs.mkdir(exist_ok=True)
    children: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "WARDEN_CHECKIN_INTERVAL_SECONDS": "10"}
    try:
        with (logs / "server.log").open("ab") as log:
            server = subprocess.Popen(
                [str(BIN / "warden"), "server", "run", "--data-dir", str(DATA / "server"),
                 "--host", HOST, "--port", str(PORT)], stdout=log, stderr=log, env=env)
        children.append(server)
        wait_healthy(server, logs / "server.log")
        agent_env = {**env, "WARDEN_AGENT_SERVER_URL": URL,
                     "WARDEN_AGENT_ENROLL_SECRET": demo["enroll_secret"],
                     "WARDEN_AGENT_STATE_DIR": str(DATA / "agent"),
                     "WARDEN_AGENT_CONFIG": str(DATA / "agent.toml")}
        with (logs / "agent.log").open("ab") as log:
            children.append(subprocess.Popen([str(BIN / "warden-agent"), "run"], stdout=log,
                                             stderr=log, env=agent_env))
        stand_in = DATA / "bin" / "telegram-desktop"
        stand_in.parent.mkdir(exist_ok=True)
        shutil.copyfile(shutil.which("sleep") or "/bin/sleep", stand_in)
        stand_in.chmod(0o755)
        telegram = subprocess.Popen([str(stand_in), "infinity"])
        children.append(telegram)
        print(f"""
Warden demo is running.

  Dashboard   {URL}/            log in as {demo['username']} / {demo['password']}
  REST API    {URL}/api/v1/findings?app=telegram
              (header  Authorization: Bearer {demo['admin_token']})
  API docs    {URL}/docs    OpenAPI {URL}/openapi.json    metrics {URL}/metrics

A stand-in for Telegram is running as pid {telegram.pid} ({stand_in}); the agent
reports it within seconds. Try:

  export WARDEN_URL={URL} WARDEN_TOKEN={demo['admin_token']}
  .venv/bin/warden findings list --app telegram
  .venv/bin/warden-agent status        (with WARDEN_AGENT_STATE_DIR={DATA / 'agent'})
  kill {telegram.pid}   (the finding turns resolved)

Logs: {logs}. Data: {DATA} (delete it to start afresh). Ctrl-C stops the demo.
""", flush=True)
        while server.poll() is None:
            time.sleep(1)  # the children do the work; wait for Ctrl-C
        print(f"the server stopped; see {logs / 'server.log'}")
    except KeyboardInterrupt:
        pass
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    child.kill()
        print("demo stopped")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _interrupt)
    sys.exit(main())
