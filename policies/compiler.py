"""Policy + catalog -> bundle: compact, deterministic JSON whose hash is its version.

The bundle is what the server signs and serves and what the agent caches. It
holds only the apps the policy names (rules and alternatives), so an agent
never carries signatures it does not use.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from policies.catalog_model import AppDefinition
from policies.policy_model import Policy

BUNDLE_FORMAT = 1


def canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def compile_bundle(policy: Policy, catalog: dict[str, AppDefinition]) -> dict[str, Any]:
    """Compile a validated policy. The result's "version" is the SHA-256 of the rest."""
    apps = {**catalog, **{app.id: app for app in policy.apps}}
    wanted = sorted({rule.app for rule in policy.rules}
                    | {rule.alternative for rule in policy.rules if rule.alternative})
    body: dict[str, Any] = {
        "format": BUNDLE_FORMAT,
        "policy": {
            "name": policy.name,
            "description": policy.description,
            "mode": policy.mode,
            "scope": policy.scope.model_dump(mode="json"),
        },
        "rules": {
            rule.app: {
                "verdict": rule.verdict,
                "action": rule.action,
                "alternative": rule.alternative,
                "message": rule.message,
                "exceptions": [ex.model_dump(mode="json") for ex in rule.exceptions],
            }
            for rule in policy.rules
        },
        "apps": {app_id: compact_app(apps[app_id]) for app_id in wanted},
    }
    return {**body, "version": bundle_version(body)}


def bundle_version(bundle: dict[str, Any]) -> str:
    body = {key: value for key, value in bundle.items() if key != "version"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def compact_app(app: AppDefinition) -> dict[str, Any]:
    # Drop empty lists and strings: the bundle travels to every machine.
    return _prune(app.model_dump(mode="json"))  # type: ignore[no-any-return]


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {key: _prune(item) for key, item in value.items()}
        return {key: item for key, item in pruned.items() if item not in ("", [], {}, None)}
    if isinstance(value, list):
        return [_prune(item) for item in value]
    return value

