"""Jamf Pro: the mobile device inventory with its applications, through the Jamf Pro API.

Auth: an API client's credentials at `POST /api/oauth/token` (client
credentials, Jamf Pro 10.49+), or `auth: basic` — a user's name and password
exchanged at `POST /api/v1/auth/token` for a bearer token. Inventory:
`GET /api/v2/mobile-devices/detail` with the GENERAL, HARDWARE,
USER_AND_LOCATION and APPLICATIONS sections, `page` / `page-size` paging
(`totalCount` says when to stop). Applications carry `identifier` (the bundle
id), `name`, `version` and `shortVersion`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from policies.vocabulary import MobileOsName
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

PAGE_SIZE = 100
_SECTIONS = ("GENERAL", "HARDWARE", "USER_AND_LOCATION", "APPLICATIONS")


class JamfConnector:
    def __init__(self, name: str, settings: dict[str, Any], secret: str,
                 http: VendorHttp | None = None, page_size: int = PAGE_SIZE) -> None:
        self.name = name
        self._url = check_url(str(settings.get("url") or ""), "Jamf Pro URL")
        self._client_id = str(settings["client_id"])
        self._basic = settings.get("auth") == "basic"
        self._secret = secret
        self._page_size = page_size
        self.http = http or VendorHttp("Jamf Pro", self._token)
        self.http._token_source = self._token
        self.stats = ReadStats()
        self._apps: dict[tuple[Any, ...], MobileApp | None] = {}

    def _token(self, http: VendorHttp) -> Token:
        if self._basic:
            return http.post_token(f"{self._url}/api/v1/auth/token", {},
                                   auth=(self._client_id, self._secret))
        return http.post_token(f"{self._url}/api/oauth/token", {
            "grant_type": "client_credentials", "client_id": self._client_id,
            "client_secret": self._secret})

    def inventory(self, wanted: Wanted) -> Iterator[InventoryItem]:
        page = 0
        seen = 0
        while True:
            params: list[tuple[str, str]] = [("section", name) for name in _SECTIONS]
            params += [("page", str(page)), ("page-size", str(self._page_size)),
                       ("sort", "mobileDeviceId:asc")]
            body = self.http.get_json(f"{self._url}/api/v2/mobile-devices/detail",
                                      dict_params(params))
            self.stats.pages += 1
            results = body.get("results")
            total = body.get("totalCount")
            if not isinstance(results, list) or not isinstance(total, int):
                raise SyncError("Jamf Pro answered a page without `results` and "
                                "`totalCount`; the sync stopped and changed nothing")
            for record in results:
                if isinstance(record, dict):
                    yield from self._record(record, wanted)
            seen += len(results)
            page += 1
            if not results or seen >= total:
                return

    def _record(self, record: dict[str, Any], wanted: Wanted) -> Iterator[InventoryItem]:
        device = _device(record)
        if device is None:
            return
        self.stats.devices += 1
        yield device
        apps = record.get("applications")
        known = self._apps
        for item in apps if isinstance(apps, list) else ():
            if not isinstance(item, dict):
                continue
            self.stats.apps += 1
            key = (device.os, item.get("identifier"), item.get("name"),
                   item.get("shortVersion") or item.get("version"))
            if key not in known:
                app = MobileApp(opt_text(key[1]), opt_text(key[2]), None, opt_text(key[3]))
                # The policy is consulted once per distinct app, not once per device.
                known[key] = app if wanted(app, device.os) else None
            found = known[key]
            if found is not None:
                yield MobileInstall(device.id, device.os, found)


def dict_params(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Repeated query parameters (`section=A&section=B`) as requests takes them."""
    params: dict[str, list[str]] = {}
    for key, value in pairs:
        params.setdefault(key, []).append(value)
    return params


def _device(record: dict[str, Any]) -> MobileDevice | None:
    device_id = record.get("mobileDeviceId") or record.get("id")
    general, hardware, user = (_section(record, name)
                               for name in ("general", "hardware", "userAndLocation"))
    if not isinstance(device_id, (str, int)) or text(record.get("deviceType")) != "iOS":
        return None  # tvOS and watchOS carry no messaging apps the catalog names
    model = text(hardware.get("model"))
    os: MobileOsName = "ipados" if "ipad" in model.lower() else "ios"
    return MobileDevice(id=str(device_id), name=text(general.get("displayName")) or str(device_id),
                        os=os, os_version=text(general.get("osVersion")),
                        user=text(user.get("username")), model=model,
                        serial=text(hardware.get("serialNumber")))


def _section(record: dict[str, Any], name: str) -> dict[str, Any]:
    value = record.get(name)
    return value if isinstance(value, dict) else {}
