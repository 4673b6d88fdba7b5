"""A sync of 10,000 phones with 100 apps each from an Android Management API stand-in.

The stand-in runs in a child process (its memory and JSON building are not the
server's) and serves `enterprises.devices.list` pages of 100 devices, each with
100 application reports; one device in 20 has Telegram. The server side is the
real thing: create_app on a SQLite file, the connector runner, the real HTTP
client, one transaction for the result. Prints the time of a first sync (10,000
hosts and their findings created), of a second identical one (nothing changes),
and the peak RSS growth, which stays bounded because pages are read one at a time
and only devices and their findings are kept, not their apps.

    python bench/mdm_sync.py [--devices 10000] [--apps 100]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

PAGE = 100
ENTERPRISE = "LCbench"


def serve(devices: int, apps: int) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._send(b'{"access_token": "bench", "expires_in": 3599}')

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            start = int(query.get("pageToken", ["0"])[0])
            page = [_device(n, apps) for n in range(start, min(start + PAGE, devices))]
            body: dict[str, object] = {"devices": page}
            if start + PAGE < devices:
                body["nextPageToken"] = str(start + PAGE)
            self._send(json.dumps(body).encode())

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _device(n: int, apps: int) -> dict[str, object]:
    reports = [{"packageName": f"com.example.app{j}", "displayName": f"App {j}",
                "versionName": "1.0", "state": "INSTALLED"} for j in range(apps - 1)]
    last = "org.telegram.messenger" if n % 20 == 0 else "com.example.notes"
    name = "Telegram" if n % 20 == 0 else "Notes"
    reports.append({"packageName": last, "displayName": name, "versionName": "11.0"})
    return {"name": f"enterprises/{ENTERPRISE}/devices/{n:08d}",
            "hardwareInfo": {"model": "Pixel 8", "serialNumber": f"SN{n:08d}"},
            "softwareInfo": {"androidVersion": "14"}, "applicationReports": reports}


def _service_account(token_url: str) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return json.dumps({"client_email": "bench@example.iam.gserviceaccount.com",
                       "private_key": pem, "token_uri": token_url})


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.devices, args.apps)
        return 0

    from server.app import create_app
    from server.bootstrap import initialize
    from server.settings import ServerSettings
    from server.store import connectors

    child = subprocess.Popen([sys.executable, __file__, "--serve", "--devices",
                              str(args.devices), "--apps", str(args.apps)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        url = f"http://127.0.0.1:{int(child.stdout.readline())}"
        with tempfile.TemporaryDirectory() as tmp:
            settings = ServerSettings(data_dir=Path(tmp), connector_poll_seconds=86400)
            initialize(settings)
            app = create_app(settings)
            context = app.state.context
            runner = app.state.connector_runner
            with context.write_sessions() as session:
                connectors.create(session, name="bench", kind="android",
                                  settings={"enterprise": ENTERPRISE, "api_url": url},
                                  sealed_secret=runner.box.seal(_service_account(url + "/t")),
                                  interval_minutes=60, group=None, actor="bench")
                session.commit()
            before = _rss_mib()
            for label in ("first sync (creates hosts and findings)",
                          "second sync (nothing changes)"):
                started = time.perf_counter()
                outcome = runner.sync("bench")
                seconds = time.perf_counter() - started
                if not outcome.ok or outcome.report is None:
                    print(f"sync failed: {outcome.error}")
                    return 1
                counts = outcome.report.counts()
                print(f"{label}: {seconds:.1f} s for {counts['devices']} devices and "
                      f"{counts['apps']} apps ({counts['devices'] / seconds:.0f} devices/s); "
                      f"findings opened {counts['findings_opened']}, resolved "
                      f"{counts['findings_resolved']}")
            print(f"peak RSS {_rss_mib():.0f} MiB ({_rss_mib() - before:+.0f} MiB during the "
                  "syncs)")
            context.engine.dispose()
    finally:
        child.terminate()
        child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
