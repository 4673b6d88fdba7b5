"""Matching an MDM's app inventory (sensor `mdm`) against the catalog's mobile signatures.

Bundle and package ids are exact (they are the stores' identity of an app);
display names and publishers, all Intune gives, are case-insensitive globs and
weaker evidence (`medium`): a name can be shared by unrelated apps.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from policies.network_index import Match
from policies.observations import MobileAppObservation
from policies.patterns import Glob, compile_glob, glob_is_literal

ANDROID = "android"


class MobileIndex:
    def __init__(self) -> None:
        self._ids: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        # Most names are literal: a dict probe (case-folded); only true globs are run.
        self._exact_names: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._names: list[tuple[Glob, str, str]] = []
        self._exact_publishers: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._publishers: list[tuple[Glob, str, str]] = []

    def add(self, app_id: str, mobile: dict[str, Any]) -> None:
        for package in mobile.get("android_packages", []):
            self._ids[(ANDROID, package)].append(
                (app_id, f"mobile.android_packages: {package}"))
        for bundle in mobile.get("ios_bundle_ids", []):
            self._ids[("apple", bundle)].append((app_id, f"mobile.ios_bundle_ids: {bundle}"))
        for glob in mobile.get("display_names", []):
            if glob_is_literal(glob):
                self._exact_names[glob.casefold()].append((app_id, glob))
            else:
                self._names.append((compile_glob(glob, caseless=True), app_id, glob))
        for glob in mobile.get("publishers", []):
            if glob_is_literal(glob):
                self._exact_publishers[glob.casefold()].append((app_id, glob))
            else:
                self._publishers.append((compile_glob(glob, caseless=True), app_id, glob))

    def match(self, obs: MobileAppObservation) -> Iterator[Match]:
        if obs.app_id:
            family = ANDROID if obs.platform == ANDROID else "apple"
            for app_id, signature in self._ids.get((family, obs.app_id), ()):
                yield Match(app_id, signature, "high")
        if obs.display_name:
            for app_id, glob in self._exact_names.get(obs.display_name.casefold(), ()):
                yield Match(app_id, f"mobile.display_names: {glob}", "medium")
            for regex, app_id, glob in self._names:
                if regex.fullmatch(obs.display_name):
                    yield Match(app_id, f"mobile.display_names: {glob}", "medium")
        if obs.publisher:
            for app_id, glob in self._exact_publishers.get(obs.publisher.casefold(), ()):
                yield Match(app_id, f"mobile.publishers: {glob}", "medium")
            for regex, app_id, glob in self._publishers:
                if regex.fullmatch(obs.publisher):
                    yield Match(app_id, f"mobile.publishers: {glob}", "medium")


def mobile_evidence(obs: MobileAppObservation) -> dict[str, Any]:
    """What a finding shows of the app: which connector and device, and how the MDM named it."""
    evidence: dict[str, Any] = {"connector": obs.connector, "device_id": obs.device_id,
                                "platform": obs.platform}
    if obs.app_id:
        evidence["package" if obs.platform == ANDROID else "bundle_id"] = obs.app_id
    for name in ("display_name", "publisher", "version"):
        if getattr(obs, name):
            evidence[name] = getattr(obs, name)
    return evidence
