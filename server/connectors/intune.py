"""Microsoft Intune through Microsoft Graph (v1.0), with an app registration's client secret.

Token: client credentials at `{login}/{tenant}/oauth2/v2.0/token`, scope
`{graph}/.default`; the app needs `DeviceManagementManagedDevices.Read.All`.
Devices: `GET /deviceManagement/managedDevices` (iOS, iPadOS, Android kept).
Apps: `GET /deviceManagement/detectedApps` gives display name, publisher,
version and platform but no bundle id; for each app the policy may care about,
`GET /deviceManagement/detectedApps/{id}/managedDevices` names the devices. All
lists page through `@odata.nextLink`. Intune lists unmanaged apps only for
corporate-owned devices (docs/mobile.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

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

DEFAULT_GRAPH_URL = "https://graph.microsoft.com"
DEFAULT_LOGIN_URL = "https://login.microsoftonline.com"
_DEVICE_FIELDS = "id,deviceName,operatingSystem,osVersion,userPrincipalName,model,serialNumber"
_DEVICE_OS: dict[str, MobileOsName] = {"ios": "ios", "ipados": "ipados", "android": "android"}
# detectedAppPlatformType values of phones and tablets.
_APP_PLATFORMS: dict[str, MobileOsName] = {
    "ios": "ios", "androidWorkProfile": "android", "androidDedicatedAndFullyManaged": "android",
    "androidDeviceAdministrator": "android", "androidOSP": "android"}


class IntuneConnector:
    def __init__(self, name: str, settings: dict[str, Any], secret: str,
                 http: VendorHttp | None = None) -> None:
        self.name = name
        self._graph = check_url(settings.get("graph_url") or DEFAULT_GRAPH_URL, "Graph URL")
        login = check_url(settings.get("login_url") or DEFAULT_LOGIN_URL, "login URL")
        # Quoted: a tenant or an app id is one path segment, never a way to another path.
        self._token_url = f"{login}/{quote(str(settings['tenant_id']), safe='')}/oauth2/v2.0/token"
        self._client_id = str(settings["client_id"])
        self._secret = secret
        self.http = http or VendorHttp("Microsoft Graph", self._token)
        self.http._token_source = self._token
        self.stats = ReadStats()

    def _token(self, http: VendorHttp) -> Token:
        return http.post_token(self._token_url, {
            "grant_type": "client_credentials", "client_id": self._client_id,
            "client_secret": self._secret, "scope": f"{self._graph}/.default"})

    def inventory(self, wanted: Wanted) -> Iterator[InventoryItem]:
        devices: dict[str, MobileOsName] = {}
        for item in self._pages("/v1.0/deviceManagement/managedDevices",
                                {"$select": _DEVICE_FIELDS}):
            device = _device(item)
            if device is not None:
                devices[device.id] = device.os
                self.stats.devices += 1
                yield device
        for item in self._pages("/v1.0/deviceManagement/detectedApps"):
            platform = _APP_PLATFORMS.get(text(item.get("platform")))
            app_id = text(item.get("id"))
            if platform is None or not app_id:
                continue
            count = item.get("deviceCount")
            self.stats.apps += count if isinstance(count, int) else 0
            app = MobileApp(None, opt_text(item.get("displayName")),
                            opt_text(item.get("publisher")), opt_text(item.get("version")))
            if not wanted(app, platform):
                continue
            path = f"/v1.0/deviceManagement/detectedApps/{quote(app_id, safe='')}/managedDevices"
            for holder in self._pages(path, {"$select": "id"}):
                device_id = text(holder.get("id"))
                if device_id in devices:
                    yield MobileInstall(device_id, devices[device_id], app)

    def _pages(self, path: str, params: dict[str, str] | None = None
               ) -> Iterator[dict[str, Any]]:
        url: str | None = self._graph + path
        query: dict[str, str] | None = params
        while url:
            page = self.http.get_json(url, query)
            self.stats.pages += 1
            values = page.get("value")
            if not isinstance(values, list):
                raise SyncError(f"Microsoft Graph answered a page without a `value` list at "
                                f"{path}; the sync stopped and changed nothing")
            yield from (value for value in values if isinstance(value, dict))
            link = page.get("@odata.nextLink")
            # The next link carries the query; it must stay on the Graph host it came from.
            url = check_url(link, "Graph next link") if isinstance(link, str) else None
            if url and not url.startswith(self._graph):
                raise SyncError(f"Microsoft Graph's next link leaves {self._graph}; refused")
            query = None


def _device(item: dict[str, Any]) -> MobileDevice | None:
    os = _DEVICE_OS.get(text(item.get("operatingSystem")).lower())
    device_id = text(item.get("id"))
    if os is None or not device_id:
        return None
    return MobileDevice(id=device_id, name=text(item.get("deviceName")) or device_id, os=os,
                        os_version=text(item.get("osVersion")),
                        user=text(item.get("userPrincipalName")),
                        model=text(item.get("model")), serial=text(item.get("serialNumber")))
