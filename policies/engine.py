"""The policy engine: observations in, findings out. Pure: no I/O, no clock.

Everything expensive happens once in ``Engine.__init__``: exact identifiers go
into dicts, globs are compiled, networks are grouped by prefix length so a
connection costs one dict probe per distinct prefix length rather than a scan
of every network.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from policies.evidence import evidence_of
from policies.findings import Finding, HostContext
from policies.matching import MAX_PATH_CHARS, Pattern, command_line_text, compile_regex
from policies.mobile_index import MobileIndex
from policies.network_index import Match as _Match
from policies.network_index import NetworkIndex
from policies.observations import (
    InstalledObservation,
    MobileAppObservation,
    Observation,
    ProcessObservation,
    finding_key,
)
from policies.patterns import Glob, compile_glob, glob_is_literal, home_aliases, normalise_path
from policies.vocabulary import Sensor

# Finding and HostContext live in policies.findings; importing them from here still works.
__all__ = ["Engine", "Finding", "HostContext"]

LINUX_COMM_LENGTH = 15

# Installed sources whose ids Windows treats case-insensitively.
_CASELESS_SOURCES = {"windows_uninstall", "msix", "winget"}
# Bundle signature key -> the installed source it identifies.
_EXACT_INSTALLED = {
    "deb": "deb",
    "rpm": "rpm",
    "snap": "snap",
    "flatpak": "flatpak",
    "bundle_ids": "app_bundle",
    "windows_uninstall_keys": "windows_uninstall",
    "msix_families": "msix",
    "winget": "winget",
    "homebrew": "homebrew",
}


class Engine:
    def __init__(self, bundle: dict[str, Any], host: HostContext | None = None) -> None:
        self.bundle = bundle
        self.version: str = bundle["version"]
        self.mode: str = bundle["policy"]["mode"]
        self.host = host or HostContext()
        self.rules: dict[str, dict[str, Any]] = bundle["rules"]
        self.apps: dict[str, dict[str, Any]] = bundle["apps"]
        self.caseless = self.host.os == "windows"
        self.in_scope = self._in_scope(bundle["policy"]["scope"])
        self._active_rules = {
            app: rule for app, rule in self.rules.items() if not self._excepted(rule)
        }
        self._index()
        self.resolvable_domains = self._resolvable_domains()
        self._home_aliases = home_aliases(self.host.homes)

    # -- public -------------------------------------------------------------

    @property
    def needs_sha256(self) -> bool:
        """Whether a process sensor should hash executables for this bundle."""
        return bool(self._sha256)

    @property
    def has_content_signatures(self) -> bool:
        """Whether a content sensor has anything to look for on this OS."""
        return bool(self._content)

    @property
    def folder_marker_files(self) -> frozenset[str]:
        """File names that, together, mark an unpacked portable app."""
        return frozenset(name for names, _ in self._contains for name in names)

    @property
    def folder_marker_globs(self) -> list[str]:
        return [glob for glob, _ in self._folder_path_globs]

    @property
    def blocks_at_exec(self) -> bool:
        """Whether any rule in force here says `block` (the agent then guards execs)."""
        return self.in_scope and any(rule["action"] == "block" and rule["verdict"] == "deny"
                                     for rule in self._active_rules.values())

    def exec_block(self, observation: ProcessObservation) -> Finding | None:
        """The `block` finding for a file about to be exec'd, if any rule blocks it.

        At exec only the file is known (its path, name and content), not the
        command line the process will get: `process.cmdline` signatures never
        block here (the process sensor still judges them once it runs).
        """
        for finding in self.evaluate(observation):
            if (finding.action == "block" and finding.verdict == "deny"
                    and not finding.matched.startswith("process.cmdline")):
                return finding
        return None

    def evaluate(self, observation: Observation, include_allowed: bool = False) -> list[Finding]:
        """The findings for one observation, at most one per app."""
        if isinstance(observation, ProcessObservation):
            sensor: Sensor = "process"
            matches = self._match_process(observation)
        elif isinstance(observation, InstalledObservation):
            sensor = "installed"
            matches = self._match_installed(observation)
        elif isinstance(observation, MobileAppObservation):
            sensor = "mdm"
            matches = self._mobile.match(observation)
        else:
            sensor = "network"
            matches = self._network.match(observation)
        findings: list[Finding] = []
        seen: set[str] = set()
        for match in matches:
            if match.app in seen:
                continue
            seen.add(match.app)
            finding = self._finding(match, observation, sensor, include_allowed)
            if finding is not None:
                findings.append(finding)
        return findings

    def evaluate_all(
        self, observations: Iterable[Observation], include_allowed: bool = False
    ) -> list[Finding]:
        return [f for obs in observations for f in self.evaluate(obs, include_allowed)]

    # -- scope and exceptions -----------------------------------------------

    def _resolvable_domains(self) -> dict[str, str]:
        """Domain -> app: the names an agent looks up to know the apps' addresses.

        Only apps whose findings are reported (a deny or alert rule, in scope,
        not excepted): resolving an allowed app's servers would add DNS traffic
        and chances of a false match for nothing. A wildcard ("*.example") names
        no host and cannot be resolved, so it is left out.
        """
        if not self.in_scope:
            return {}
        return {
            domain: app_id for domain, (app_id, _) in self._network.domains.items()
            if "*" not in domain
            and self._active_rules.get(app_id, {}).get("verdict", "allow") != "allow"
        }

    def _in_scope(self, scope: dict[str, list[str]]) -> bool:
        if scope.get("os") and self.host.os not in scope["os"]:
            return False
        if scope.get("groups") and not self.host.groups & set(scope["groups"]):
            return False
        return not (scope.get("tags") and not self.host.tags & set(scope["tags"]))

    def _excepted(self, rule: dict[str, Any]) -> bool:
        for exception in rule.get("exceptions", []):
            if dt.date.fromisoformat(exception["expires"]) < self.host.today:
                continue
            if self.host.hostname and self.host.hostname in exception.get("hosts", []):
                return True
            if self.host.groups & set(exception.get("groups", [])):
                return True
        return False

    def _finding(
        self, match: _Match, observation: Observation, sensor: Sensor, include_allowed: bool
    ) -> Finding | None:
        rule = self.rules.get(match.app)
        if rule is None:
            return None
        verdict = rule["verdict"]
        action = rule["action"]
        if not self.in_scope:
            verdict = "out_of_scope"
        elif match.app not in self._active_rules:
            verdict = "excepted"
        elif match.app in self.host.granted and verdict != "allow":
            # Seen and said, never acted on: security staff see who uses their exception.
            return self._as_finding(match, observation, sensor, rule, "excepted", "report")
        if (verdict != rule["verdict"] or verdict == "allow") and not include_allowed:
            return None
        return self._as_finding(match, observation, sensor, rule, verdict, action)

    def _as_finding(self, match: _Match, observation: Observation, sensor: Sensor,
                    rule: dict[str, Any], verdict: str, action: str) -> Finding:
        app = self.apps.get(match.app, {})
        return Finding(
            app=match.app,
            app_name=app.get("name", match.app),
            verdict=verdict,
            action=action,
            mode=self.mode,
            sensor=sensor,
            key=finding_key(match.app, sensor, observation.identity),
            evidence=evidence_of(observation),
            alternative=rule.get("alternative"),
            confidence=match.confidence,
            message=rule.get("message", ""),
            matched=match.signature,
        )

    # -- indexes ------------------------------------------------------------

    def _index(self) -> None:
        self._names: dict[str, list[str]] = defaultdict(list)
        self._truncated: dict[str, list[tuple[str, str]]] = defaultdict(list)
        self._exe_by_basename: dict[str, list[tuple[Glob, str, str]]] = defaultdict(list)
        self._exe_other: list[tuple[Glob, str, str]] = []
        self._cmdline: list[tuple[Pattern, str, str]] = []
        self._sha256: dict[str, str] = {}
        self._installed: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        self._desktop_globs: list[tuple[Glob, str, str]] = []
        self._display_globs: list[tuple[Glob, str, str]] = []
        self._publisher_globs: list[tuple[Glob, str, str]] = []
        self._team_ids: dict[str, str] = {}
        self._folder_path_globs: list[tuple[str, tuple[Glob, str]]] = []
        self._contains: list[tuple[frozenset[str], str]] = []
        self._network = NetworkIndex()
        self._mobile = MobileIndex()
        # "<app>/<signature id>" -> app: what a content scan's reference names.
        self._content: dict[str, str] = {}

        for app_id, app in sorted(self.apps.items()):
            signatures = app.get("signatures", {})
            self._index_process(app_id, signatures.get("process", {}))
            self._index_installed(app_id, signatures.get("installed", {}))
            self._network.add(app_id, signatures.get("network", {}))
            self._mobile.add(app_id, signatures.get("mobile", {}))
            for signature in signatures.get("content", []):
                if not signature.get("os") or self.host.os in signature["os"]:
                    self._content[f"{app_id}/{signature['id']}"] = app_id

    def _key(self, name: str) -> str:
        return name.lower() if self.caseless else name

    def _index_process(self, app_id: str, process: dict[str, Any]) -> None:
        for name in process.get("names", []):
            self._names[self._key(name)].append(app_id)
            if len(name) > LINUX_COMM_LENGTH:
                self._truncated[name[:LINUX_COMM_LENGTH]].append((app_id, name))
        for glob in process.get("exe_globs", []):
            entry = (_compile_path_glob(glob), app_id, glob)
            basename = glob.replace("\\", "/").rsplit("/", 1)[-1]
            if glob_is_literal(basename):
                self._exe_by_basename[basename.lower()].append(entry)
            else:
                self._exe_other.append(entry)
        for pattern in process.get("cmdline", []):
            self._cmdline.append((compile_regex(pattern), app_id, pattern))
        for digest in process.get("sha256", []):
            self._sha256[digest] = app_id

    def _index_installed(self, app_id: str, installed: dict[str, Any]) -> None:
        for key, source in _EXACT_INSTALLED.items():
            for value in installed.get(key, []):
                norm = value.lower() if source in _CASELESS_SOURCES else value
                self._installed[(source, norm)].append((app_id, f"installed.{key}: {value}"))
        for glob in installed.get("desktop_files", []):
            self._desktop_globs.append((compile_glob(glob), app_id, glob))
        for glob in installed.get("windows_display_names", []):
            self._display_globs.append((compile_glob(glob, caseless=True), app_id, glob))
        for glob in installed.get("windows_publishers", []):
            self._publisher_globs.append((compile_glob(glob, caseless=True), app_id, glob))
        for team_id in installed.get("team_ids", []):
            self._team_ids[team_id] = app_id
        for marker in installed.get("folders", []):
            if marker.get("path"):
                self._folder_path_globs.append(
                    (marker["path"], (_compile_path_glob(marker["path"]), app_id)))
            if marker.get("contains"):
                self._contains.append((frozenset(marker["contains"]), app_id))

    # -- matching -----------------------------------------------------------

    def _match_content(self, refs: tuple[str, ...]) -> Iterator[_Match]:
        # A content match is what the file is, whatever it is called: as sure as a hash.
        for ref in refs:
            if ref in self._content:
                yield _Match(self._content[ref], f"content: {ref}", "high")

    def _match_process(self, obs: ProcessObservation) -> Iterator[_Match]:
        yield from self._match_content(obs.content)
        if obs.sha256 and obs.sha256 in self._sha256:
            yield _Match(self._sha256[obs.sha256], f"process.sha256: {obs.sha256}", "high")
        if obs.exe and len(obs.exe) <= MAX_PATH_CHARS:
            exes = [(exe, exe.casefold())
                    for exe in self._with_standard_home(normalise_path(obs.exe))]
            basename = exes[0][0].rsplit("/", 1)[-1].lower()
            for regex, app_id, glob in (*self._exe_by_basename.get(basename, ()),
                                        *self._exe_other):
                for exe, folded in exes:
                    if regex.matches(exe, folded):
                        yield _Match(app_id, f"process.exe_globs: {glob}", "high")
                        break
        for app_id in self._names.get(self._key(obs.name), ()):
            yield _Match(app_id, f"process.names: {obs.name}", "medium")
        if len(obs.name) == LINUX_COMM_LENGTH and self.host.os == "linux":
            # The kernel keeps only 15 characters of a process name (comm).
            for app_id, full in self._truncated.get(obs.name, ()):
                yield _Match(app_id, f"process.names: {full} (truncated to {obs.name})", "medium")
        if self._cmdline and obs.cmdline:
            joined = command_line_text(obs.cmdline)
            for regex, app_id, pattern in self._cmdline:
                if regex.search(joined):
                    yield _Match(app_id, f"process.cmdline: {pattern}", "medium")

    def _match_installed(self, obs: InstalledObservation) -> Iterator[_Match]:
        yield from self._match_content(obs.content)
        norm = obs.id.lower() if obs.source in _CASELESS_SOURCES else obs.id
        for app_id, signature in self._installed.get((obs.source, norm), ()):
            yield _Match(app_id, signature, "high")
        if obs.team_id and obs.team_id in self._team_ids:
            yield _Match(self._team_ids[obs.team_id], f"installed.team_ids: {obs.team_id}", "high")
        if obs.source == "desktop":
            for regex, app_id, glob in self._desktop_globs:
                if regex.fullmatch(obs.id):
                    yield _Match(app_id, f"installed.desktop_files: {glob}", "high")
        if obs.display_name:
            for regex, app_id, glob in self._display_globs:
                if regex.fullmatch(obs.display_name):
                    yield _Match(app_id, f"installed.windows_display_names: {glob}", "medium")
        if obs.publisher:
            for regex, app_id, glob in self._publisher_globs:
                if regex.fullmatch(obs.publisher):
                    yield _Match(app_id, f"installed.windows_publishers: {glob}", "medium")
        folder = obs.path or obs.id
        if obs.source == "folder" and len(folder) <= MAX_PATH_CHARS:
            paths = self._with_standard_home(normalise_path(folder))
            for glob, (regex, app_id) in self._folder_path_globs:
                if any(regex.fullmatch(path) for path in paths):
                    yield _Match(app_id, f"installed.folders.path: {glob}", "medium")
        if obs.source == "folder":
            for names, app_id in self._contains:
                if names <= obs.contents:
                    yield _Match(app_id, f"installed.folders.contains: {sorted(names)}", "medium")

    def _with_standard_home(self, path: str) -> tuple[str, ...]:
        """The path, and `/home/alice/x` too when `/srv/people/alice` is alice's home, so
        `~` matches it. Both: a glob naming the real place (`/opt/...`, with a home at
        /opt) must still match."""
        for home, standard in self._home_aliases:
            if path.startswith(home) and (len(path) == len(home) or path[len(home)] == "/"):
                return path, standard + path[len(home):]
        return (path,)


def _compile_path_glob(glob: str) -> Glob:
    # Paths are lower-cased when they look like Windows paths; match them caselessly.
    return compile_glob(glob, caseless="%" in glob)
