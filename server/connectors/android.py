"""Android Management API: enterprise devices and their application reports.

Auth: the service account's key signs a JWT (RS256) that Google's token
endpoint (`token_uri` in the key file) exchanges for an access token with scope
`https://www.googleapis.com/auth/androidmanagement`. Inventory:
`GET /v1/enterprises/{id}/devices` paged by `pageToken` / `nextPageToken`.
`applicationReports` (package name, display name, version) are filled only
when the enterprise's policy sets `statusReportingSettings.applicationReportsEnabled`;
a device without them has unknown apps, and the sync says so.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from server.connectors.http import Token, VendorHttp, check_url
from server.connectors.inventory import (
    InventoryItem,
    MobileApp,
    MobileDevice,
    MobileInstall,
    ReadStats,
    SyncError,
    Wanted,
    opt_text,
    text,
)

DEFAULT_API_URL = "https://androidmanagement.googleapis.com"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"
SCOPE = "https://www.googleapis.com/auth/androidmanagement"
PAGE_SIZE = 100
JWT_LIFETIME_SECONDS = 3600


class AndroidConnector:
    def __init__(self, name: str, settings: dict[str, Any], secret: str,
                 http: VendorHttp | None = None, page_size: int = PAGE_SIZE) -> None:
        self.name = name
        self._api = check_url(settings.get("api_url") or DEFAULT_API_URL, "API URL")
        enterprise = str(settings["enterprise"]).removeprefix("enterprises/")
        self._parent = f"enterprises/{quote(enterprise, safe='')}"
        self._account = _service_account(secret)
        token_url = (settings.get("token_url") or self._account.get("token_uri")
                     or DEFAULT_TOKEN_URL)
        self._token_url = check_url(str(token_url), "token URL")
        self._page_size = page_size
        self.http = http or VendorHttp("Android Management API", self._token)
        self.http._token_source = self._token
        self.stats = ReadStats()
        self._without_reports = 0
        # Each distinct (package, name, version): the app, or None if the policy ignores it.
        self._apps: dict[tuple[str, Any, Any], MobileApp | None] = {}

    def _token(self, http: VendorHttp) -> Token:
        return http.post_token(self._token_url, {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": self._assertion()})

    def _assertion(self) -> str:
        now = int(time.time())
        header = {"alg": "RS256", "typ": "JWT"}
        claims = {"iss": self._account["client_email"], "scope": SCOPE,
                  "aud": self._token_url, "iat": now, "exp": now + JWT_LIFETIME_SECONDS}
        signing_input = f"{_b64(header)}.{_b64(claims)}".encode()
        key = self._account["key"]
        signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return signing_input.decode() + "." + _b64url(signature)

    def inventory(self, wanted: Wanted) -> Iterator[InventoryItem]:
        token: str | None = None
        while True:
            params = {"pageSize": str(self._page_size)}
            if token:
                params["pageToken"] = token
            body = self.http.get_json(f"{self._api}/v1/{self._parent}/devices", params)
            self.stats.pages += 1
            devices = body.get("devices", [])
            if not isinstance(devices, list):
                raise SyncError("the Android Management API answered `devices` that is not a "
                                "list; the sync stopped and changed nothing")
            for record in devices:
                if isinstance(record, dict):
                    yield from self._record(record, wanted)
            next_token = body.get("nextPageToken")
            if not isinstance(next_token, str) or not next_token:
                break
            token = next_token
        if self._without_reports:
            self.stats.notes.append(
                f"{self._without_reports} of {self.stats.devices} device(s) sent no application "
                "reports, so their apps are unknown (their findings are left as they were): "
                "set statusReportingSettings.applicationReportsEnabled in the enterprise's "
                "policy")

    def _record(self, record: dict[str, Any], wanted: Wanted) -> Iterator[InventoryItem]:
        name = text(record.get("name"))
        if not name:
            return
        hardware = record.get("hardwareInfo")
        hardware = hardware if isinstance(hardware, dict) else {}
        software = record.get("softwareInfo")
        software = software if isinstance(software, dict) else {}
        reports = record.get("applicationReports")
        known = isinstance(reports, list) and bool(reports)
        model = text(hardware.get("model"))
        device = MobileDevice(
            id=name, name=f"{model or 'android'}-{name.rsplit('/', 1)[-1]}", os="android",
            os_version=text(software.get("androidVersion")), user=text(record.get("userName")),
            model=model, serial=text(hardware.get("serialNumber")), apps_known=known)
        self.stats.devices += 1
        yield device
        if not known:
            self._without_reports += 1
            return
        apps = self._apps
        for report in reports if isinstance(reports, list) else ():
            # The hot loop of a large fleet (a million reports): plain dict work, and the
            # policy consulted once per distinct app, not per device.
            if not isinstance(report, dict):
                continue
            package = report.get("packageName")
            if not isinstance(package, str) or not package:
                continue
            self.stats.apps += 1
            key = (package, report.get("displayName"), report.get("versionName"))
            if key not in apps:
                app = MobileApp(package, opt_text(key[1]), None, opt_text(key[2]))
                apps[key] = app if wanted(app, "android") else None
            found = apps[key]
            if found is not None:
                yield MobileInstall(device.id, "android", found)


def _service_account(secret: str) -> dict[str, Any]:
    """The key file's email and RSA key; SyncError naming what is wrong with it."""
    try:
        data = json.loads(secret)
    except ValueError as exc:
        raise SyncError("the service-account file is not JSON: download the key (JSON) of "
                        "the service account from the Google Cloud console") from exc
    if not isinstance(data, dict) or not isinstance(data.get("client_email"), str) \
            or not isinstance(data.get("private_key"), str):
        raise SyncError("the service-account file has no `client_email` and `private_key`: "
                        "use the service account's JSON key file")
    try:
        key = serialization.load_pem_private_key(data["private_key"].encode(), password=None)
    except ValueError as exc:
        raise SyncError("the service-account file's `private_key` is not a PEM private "
                        "key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SyncError("the service-account key is not an RSA key (RS256 needs one)")
    token_uri = data.get("token_uri") if isinstance(data.get("token_uri"), str) else None
    return {"client_email": data["client_email"], "key": key, "token_uri": token_uri}


def _b64(data: dict[str, Any]) -> str:
    return _b64url(json.dumps(data, separators=(",", ":")).encode())


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
