"""The compiled bundle is compact, deterministic and versioned by its content."""

from __future__ import annotations

import json

from policies.compiler import bundle_version, canonical_json, compile_bundle
from policies.loader import default_policy_path, load_catalog, load_policy, parse_policy


def test_bundle_is_deterministic_and_json_serialisable() -> None:
    catalog = load_catalog()
    policy = load_policy(default_policy_path(), catalog)
    first = compile_bundle(policy, catalog)
    second = compile_bundle(load_policy(default_policy_path(), load_catalog()), load_catalog())
    assert canonical_json(first) == canonical_json(second)
    assert json.loads(json.dumps(first)) == first
    assert first["version"] == bundle_version(first)
    assert len(first["version"]) == 64


def test_bundle_holds_only_the_apps_the_policy_names() -> None:
    catalog = load_catalog()
    bundle = compile_bundle(load_policy(default_policy_path(), catalog), catalog)
    assert sorted(bundle["apps"]) == ["signal", "telegram"]
    assert all(value not in ("", [], {}) for value in bundle["apps"]["telegram"].values())


def test_any_change_changes_the_version() -> None:
    catalog = load_catalog()
    base = "name: p\nrules:\n  - app: telegram\n    verdict: deny\n"
    audit = compile_bundle(parse_policy(base, "a", catalog), catalog)
    enforce = compile_bundle(parse_policy("mode: enforce\n" + base, "b", catalog), catalog)
    assert audit["version"] != enforce["version"]
    tampered = {**audit, "policy": {**audit["policy"], "mode": "enforce"}}
    assert bundle_version(tampered) != audit["version"]
