"""Which approved apps to offer someone told not to use a banned one.

Pure functions over the catalog and a compiled policy bundle, so the API, the
dashboard and tests ask the same question the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.catalog_model import AppDefinition
from policies.vocabulary import OS_NAMES

# Phones get the app's store pages (App Store, Google Play) as their "hint".
_OSES = (*OS_NAMES, "ios", "android")


class UnknownApp(KeyError):
    """The app is neither in the catalog nor in the policy bundle."""

    def __init__(self, app_id: str) -> None:
        super().__init__(app_id)
        self.app_id = app_id

    def __str__(self) -> str:
        # KeyError's own str() is the quoted key, which reads badly in an API error.
        return (f"unknown app {self.app_id!r}: it is neither in the catalog nor in the "
                "active policy")


def recommendations_for(
    app_id: str, bundle: Mapping[str, Any], catalog: Mapping[str, AppDefinition]
) -> dict[str, Any]:
    """The approved alternatives for `app_id`, the policy rule's own alternative first.

    Then every other app the policy allows in the same category (e.g. every allowed
    messenger), by name. An app without a rule gets verdict None and the same list.
    """
    apps = _known_apps(bundle, catalog)
    rules: Mapping[str, Mapping[str, Any]] = bundle.get("rules", {})
    if app_id not in apps:
        raise UnknownApp(app_id)
    app = apps[app_id]
    rule = rules.get(app_id)
    chosen: list[str] = []
    if rule and rule.get("alternative") in apps:
        chosen.append(rule["alternative"])
    allowed = [other for other, other_rule in rules.items()
               if other_rule.get("verdict") == "allow" and other in apps
               and other not in chosen and other != app_id
               and apps[other]["category"] == app["category"]]
    chosen.extend(sorted(allowed, key=lambda other: (apps[other]["name"].lower(), other)))
    return {
        "app": app_id,
        "app_name": app["name"],
        "verdict": rule.get("verdict") if rule else None,
        "alternatives": [_alternative(apps[other]) for other in chosen],
    }


def _known_apps(
    bundle: Mapping[str, Any], catalog: Mapping[str, AppDefinition]
) -> dict[str, dict[str, Any]]:
    # The bundle wins: it holds the policy's own apps and the definitions agents received.
    apps = {app_id: _describe(app.model_dump(mode="json")) for app_id, app in catalog.items()}
    for app_id, compact in bundle.get("apps", {}).items():
        apps[app_id] = _describe({"id": app_id, **compact})
    return apps


def _describe(app: Mapping[str, Any]) -> dict[str, Any]:
    # Compiled bundles drop empty fields; put every one back with a neutral value.
    hints = app.get("install_hints") or {}
    return {
        "id": app["id"],
        "name": app.get("name") or app["id"],
        "category": app.get("category") or "messenger",
        "homepage": app.get("homepage") or "",
        "download_url": app.get("download_url") or "",
        "install_hints": {os_name: hints.get(os_name) or "" for os_name in _OSES},
    }


def _alternative(app: Mapping[str, Any]) -> dict[str, Any]:
    return {key: app[key] for key in ("id", "name", "homepage", "download_url", "install_hints")}
