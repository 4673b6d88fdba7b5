"""Apps as the dashboard names them: display names, and what to use instead of a banned one.

Both read the active policy's bundle, which may define apps beyond the stock
catalog; `server.recommendations` answers the alternatives question for the
API and the dashboard alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.orm import Session

from policies.catalog_model import AppDefinition
from server.recommendations import UnknownApp, recommendations_for
from server.store import policies


def active_bundle(session: Session) -> tuple[int, dict[str, Any]] | None:
    """The active policy version's number and compiled bundle."""
    active = policies.active(session)
    if active is None:
        return None
    row = policies.get(session, active.number)
    return (row.number, policies.bundle_of(row)) if row else None


def banned_with_alternatives(
    bundle: Mapping[str, Any], catalog: Mapping[str, AppDefinition]
) -> list[dict[str, Any]]:
    """For each app the policy denies: its name and the approved alternatives, with links."""
    banned = []
    for app_id, rule in sorted(bundle.get("rules", {}).items()):
        if rule.get("verdict") != "deny":
            continue
        try:
            banned.append(recommendations_for(app_id, bundle, catalog))
        except UnknownApp:
            continue  # a rule for an app neither side knows: nothing to recommend
    return banned


def alternatives_for(
    app_id: str, bundle: Mapping[str, Any] | None, catalog: Mapping[str, AppDefinition]
) -> list[dict[str, Any]]:
    """The approved alternatives for one app (empty when nothing is known about it)."""
    try:
        found: list[dict[str, Any]] = recommendations_for(app_id, bundle or {},
                                                          catalog)["alternatives"]
    except UnknownApp:
        return []
    return found


def app_names(bundle: Mapping[str, Any] | None,
              catalog: Mapping[str, AppDefinition]) -> dict[str, str]:
    """Display names by app id: the catalog's, overridden by the policy's own apps."""
    names = {app_id: app.name for app_id, app in catalog.items()}
    for app_id, compact in (bundle or {}).get("apps", {}).items():
        names[app_id] = compact.get("name") or app_id
    return names
