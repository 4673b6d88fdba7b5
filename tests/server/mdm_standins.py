"""Local stand-ins for the MDM vendors' APIs, written from their public references, served
over real HTTP on loopback (docs/mobile.md lists the references).

One server answers all three vendors (their paths differ):

- Microsoft Graph + Entra ID: `POST /{tenant}/oauth2/v2.0/token` (client credentials),
  `GET /v1.0/deviceManagement/managedDevices`, `/detectedApps`,
  `/detectedApps/{id}/managedDevices`; paging by `@odata.nextLink`.
- Jamf Pro: `POST /api/oauth/token` (client credentials), `POST /api/v1/auth/token`
  (basic), `GET /api/v2/mobile-devices/detail` paged by `page` / `page-size`.
- Google: `POST /token` (a JWT bearer assertion, its RS256 signature checked with the
  service account's public key), `GET /v1/enterprises/{id}/devices` paged by
  `pageToken` / `nextPageToken`.

`Faults` makes it misbehave the ways the references say a client must survive:
`429` with `Retry-After`, a token that expires mid-sync (`401`), a `5xx` or
malformed JSON on some page, refused credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLIENT_ID = "warden-client"
CLIENT_SECRET = "s3cret-value-never-printed"
TENANT = "contoso.onmicrosoft.com"
ENTERPRISE = "LC01abcd"
SERVICE_EMAIL = "warden@project.iam.gserviceaccount.com"


@dataclass
class App:
    name: str
    bundle: str | None = None  # bundle id / package name (Jamf, Android); Intune has none
    publisher: str = ""
    version: str = "1.0"


@dataclass
class Device:
    id: str
    name: str
    os: str  # iOS, iPadOS, Android
    model: str = "iPhone15,2"
    serial: str = "SN0001"
    user: str = "alice@example.org"
    apps: list[App] = field(default_factory=list)
    reports: bool = True  # Android: applicationReports filled


@dataclass
class Faults:
    throttle: int = 0  # the next N inventory GETs answer 429 with Retry-After
    retry_after: str = "2"
    status_503: int = 0  # the next N inventory GETs answer 503 with Retry-After
    expire_after: int | None = None  # after N inventory GETs the token in use is expired
    fail_page: int | None = None  # this inventory GET (0-based) answers 500
    malformed_page: int | None = None  # this inventory GET answers broken JSON
    refuse_credentials: bool = False


@dataclass
class Log:
    tokens_issued: int = 0
    inventory_gets: int = 0
    paths: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)


class StandIn:
    """The fleet (mutable between syncs), the faults to inject, and what was asked."""

    def __init__(self, page_size: int = 2) -> None:
        self.devices: list[Device] = []
        self.faults = Faults()
        self.log = Log()
        self.page_size = page_size
        self.valid_tokens: set[str] = set()
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.url = ""
        self.lock = threading.Lock()

    def service_account(self) -> str:
        pem = self.key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.PKCS8,
                                     serialization.NoEncryption()).decode()
        return json.dumps({"type": "service_account", "client_email": SERVICE_EMAIL,
                           "private_key": pem, "token_uri": f"{self.url}/token"})

    # -- tokens ------------------------------------------------------------------

    def issue(self) -> str:
        token = uuid.uuid4().hex
        self.valid_tokens.add(token)
        self.log.tokens_issued += 1
        return token

    def check_client(self, form: dict[str, str]) -> bool:
        return (not self.faults.refuse_credentials and form.get("client_id") == CLIENT_ID
                and form.get("client_secret") == CLIENT_SECRET
                and form.get("grant_type") == "client_credentials")

    def check_assertion(self, assertion: str) -> bool:
        try:
            head, body, signature = assertion.split(".")
            self.key.public_key().verify(_unb64(signature), f"{head}.{body}".encode(),
                                         padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return False
        claims = json.loads(_unb64(body))
        return (not self.faults.refuse_credentials and claims.get("iss") == SERVICE_EMAIL
                and claims.get("scope") == "https://www.googleapis.com/auth/androidmanagement"
                and claims.get("aud") == f"{self.url}/token")

    # -- inventory -----------------------------------------------------------------

    def fault_for_get(self) -> tuple[int, dict[str, str], bytes] | None:
        """What the next inventory GET answers instead of its page, if anything."""
        faults = self.faults
        index = self.log.inventory_gets
        self.log.inventory_gets += 1
        if faults.throttle:
            faults.throttle -= 1
            return 429, {"Retry-After": faults.retry_after}, b'{"error": "throttled"}'
        if faults.status_503:
            faults.status_503 -= 1
            return 503, {"Retry-After": faults.retry_after}, b"busy"
        if faults.expire_after is not None and index == faults.expire_after:
            faults.expire_after = None
            self.valid_tokens.clear()  # the token in use just expired
        if faults.fail_page is not None and index == faults.fail_page:
            return 500, {}, b'{"error": {"code": "InternalServerError"}}'
        if faults.malformed_page is not None and index == faults.malformed_page:
            return 200, {}, b'{"value": [{"id": '
        return None

    def graph_devices(self) -> list[dict[str, Any]]:
        return [{"id": d.id, "deviceName": d.name, "operatingSystem": d.os,
                 "osVersion": "17.5", "userPrincipalName": d.user, "model": d.model,
                 "serialNumber": d.serial} for d in self.devices]

    def graph_apps(self) -> dict[str, tuple[dict[str, Any], list[str]]]:
        apps: dict[str, tuple[dict[str, Any], list[str]]] = {}
        for device in self.devices:
            platform = {"iOS": "ios", "iPadOS": "ios", "Android": "androidWorkProfile"}.get(
                device.os, device.os.lower())
            for app in device.apps:
                app_id = hashlib.sha256(
                    f"{app.name}|{app.version}|{platform}".encode()).hexdigest()[:32]
                entry = apps.setdefault(app_id, ({
                    "id": app_id, "displayName": app.name, "version": app.version,
                    "sizeInByte": 1000, "deviceCount": 0, "publisher": app.publisher,
                    "platform": platform}, []))
                entry[0]["deviceCount"] += 1
                entry[1].append(device.id)
        return apps

    def jamf_record(self, device: Device) -> dict[str, Any]:
        return {"mobileDeviceId": device.id, "deviceType": "iOS",
                "general": {"displayName": device.name, "osVersion": "17.5"},
                "hardware": {"model": device.model, "serialNumber": device.serial},
                "userAndLocation": {"username": device.user},
                "applications": [{"identifier": a.bundle, "name": a.name, "version": "100",
                                  "shortVersion": a.version} for a in device.apps]}

    def android_record(self, device: Device) -> dict[str, Any]:
        record: dict[str, Any] = {
            "name": f"enterprises/{ENTERPRISE}/devices/{device.id}", "state": "ACTIVE",
            "hardwareInfo": {"model": device.model, "serialNumber": device.serial,
                             "brand": "google"},
            "softwareInfo": {"androidVersion": "14"}, "userName": device.user}
        if device.reports:
            record["applicationReports"] = [
                {"packageName": a.bundle, "displayName": a.name, "versionName": a.version,
                 "state": "INSTALLED", "applicationSource": "INSTALLED_FROM_PLAY_STORE"}
                for a in device.apps]
        return record


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        standin = self.server.standin
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        path = urlsplit(self.path).path
        with standin.lock:
            standin.log.paths.append(f"POST {path}")
            if path == f"/{TENANT}/oauth2/v2.0/token" or path == "/api/oauth/token":
                if not standin.check_client(form):
                    self._send(401, {"error": "invalid_client",
                                     "error_description": "AADSTS7000215: Invalid client "
                                                          "secret provided."})
                    return
                self._send(200, {"token_type": "Bearer", "expires_in": 3599,
                                 "access_token": standin.issue()})
            elif path == "/api/v1/auth/token":
                expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
                if standin.faults.refuse_credentials or \
                        self.headers.get("Authorization") != f"Basic {expected}":
                    self._send(401, {"httpStatus": 401, "errors": []})
                    return
                self._send(200, {"token": standin.issue(), "expires": "2099-01-01T00:00:00Z"})
            elif path == "/token":
                if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" \
                        or not standin.check_assertion(form.get("assertion", "")):
                    self._send(400, {"error": "invalid_grant",
                                     "error_description": "Invalid JWT Signature."})
                    return
                self._send(200, {"access_token": standin.issue(), "expires_in": 3599,
                                 "token_type": "Bearer"})
            else:
                self._send(404, {"error": "not found"})

    def do_GET(self) -> None:
        standin = self.server.standin
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        with standin.lock:
            standin.log.paths.append(f"GET {parts.path}")
            bearer = self.headers.get("Authorization", "")
            standin.log.authorizations.append(bearer)
            fault = standin.fault_for_get()
            if bearer.removeprefix("Bearer ") not in standin.valid_tokens:
                self._send(401, {"error": {"code": "InvalidAuthenticationToken",
                                           "message": "Access token has expired."}})
                return
            if fault is not None:
                self._send(fault[0], fault[2], fault[1])
                return
            self._inventory(parts.path, query)

    def _inventory(self, path: str, query: dict[str, list[str]]) -> None:
        standin = self.server.standin
        size = standin.page_size
        if path == "/v1.0/deviceManagement/managedDevices":
            self._graph_page(path, standin.graph_devices(), query)
        elif path == "/v1.0/deviceManagement/detectedApps":
            self._graph_page(path, [app for app, _ in standin.graph_apps().values()], query)
        elif path.startswith("/v1.0/deviceManagement/detectedApps/") and \
                path.endswith("/managedDevices"):
            app_id = path.split("/")[4]
            holders = standin.graph_apps().get(app_id, ({}, []))[1]
            self._graph_page(path, [{"id": device_id} for device_id in holders], query)
        elif path == "/api/v2/mobile-devices/detail":
            page = int(query.get("page", ["0"])[0])
            size = int(query.get("page-size", ["100"])[0])
            records = [standin.jamf_record(d) for d in standin.devices]
            self._send(200, {"totalCount": len(records),
                             "results": records[page * size:(page + 1) * size]})
        elif path == f"/v1/enterprises/{ENTERPRISE}/devices":
            start = int(query.get("pageToken", ["0"])[0])
            size = min(int(query.get("pageSize", ["10"])[0]), standin.page_size)
            records = [standin.android_record(d) for d in standin.devices]
            body: dict[str, Any] = {"devices": records[start:start + size]}
            if start + size < len(records):
                body["nextPageToken"] = str(start + size)
            self._send(200, body)
        else:
            self._send(404, {"error": {"code": "ResourceNotFound"}})

    def _graph_page(self, path: str, items: list[dict[str, Any]],
                    query: dict[str, list[str]]) -> None:
        size = self.server.standin.page_size
        start = int(query.get("$skiptoken", ["0"])[0])
        body: dict[str, Any] = {"value": items[start:start + size]}
        if start + size < len(items):
            body["@odata.nextLink"] = (f"{self.server.standin.url}{path}"
                                       f"?$skiptoken={start + size}")
        self._send(200, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandIn


@contextmanager
def running(standin: StandIn) -> Iterator[StandIn]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.standin = standin
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    # Polling every 0.05 s, not 0.5: shutdown() waits for the next poll, at every teardown.
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
