"""Read catalog and policy files into models, turning every problem into a ValidationIssue."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from policies.catalog_model import AppDefinition
from policies.compiler import compile_bundle
from policies.critical import BLOCKING_ACTIONS, critical_hits, wildcard_only
from policies.errors import PolicyError, ValidationIssue
from policies.policy_model import Policy
from policies.vocabulary import OS_NAMES, OsName
from policies.yaml_lines import Path as YamlPath
from policies.yaml_lines import YamlSyntaxError, line_for, load_with_lines

ModelT = TypeVar("ModelT", bound=BaseModel)

# A policy file is small; anything bigger is a mistake (or an attack on the server).
MAX_POLICY_BYTES = 1024 * 1024

_HINTS = {
    "extra_forbidden": "remove it or fix its spelling (see the policy format in the README)",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
    "date_from_datetime_parsing": "write the date as YYYY-MM-DD",
    "date_parsing": "write the date as YYYY-MM-DD",
    "too_short": "add at least one entry",
    "string_pattern_mismatch": "use lower-case letters, digits, '-' and '_'; start with a letter",
}


def default_catalog_dir() -> Path:
    return Path(str(resources.files("policies") / "catalog"))


def default_policy_path() -> Path:
    return Path(str(resources.files("policies") / "default.yaml"))


def _field_name(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def parse_model(model: type[ModelT], text: str, source: str) -> ModelT:
    """Parse YAML (or JSON, a subset of it) text into `model`, or raise PolicyError."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise PolicyError([ValidationIssue(source, None, "", "file is larger than 1 MiB",
                                           "split it or remove unused signatures")])
    try:
        data, lines = load_with_lines(text)
    except YamlSyntaxError as exc:
        raise PolicyError([ValidationIssue(source, exc.line, "", str(exc), exc.hint)]) from exc
    if not isinstance(data, dict):
        raise PolicyError([ValidationIssue(source, 1, "", "expected a mapping of keys at the top",
                                           "start the file with `name:`, `rules:` ...")])
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise PolicyError(_issues_from_pydantic(exc, lines, source)) from exc


def _issues_from_pydantic(
    exc: PydanticValidationError, lines: dict[YamlPath, int], source: str
) -> list[ValidationIssue]:
    issues = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if isinstance(part, str | int))
        message = error["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        hint = _HINTS.get(error["type"], "")
        if error["type"] == "extra_forbidden":
            message = f"unknown key {loc[-1]!r}"
        elif error["type"] == "value_error" and "; " in message:
            # Our validators write "what is wrong; how to fix it".
            message, hint = message.split("; ", 1)
        issues.append(ValidationIssue(source, line_for(lines, loc), _field_name(loc), message,
                                      hint or "see the policy format in the README"))
    return issues


def load_app(path: Path) -> AppDefinition:
    return parse_model(AppDefinition, path.read_text(encoding="utf-8"), str(path))


def load_catalog(directory: Path | None = None) -> dict[str, AppDefinition]:
    """Every app definition in `directory` (default: the stock catalog), by id.

    The server, the agent and the CLI all load the same few files again and again; the
    parsed definitions are frozen models, so they are kept per directory and reused for as
    long as no file there changed (name, size and mtime of each).
    """
    directory = directory or default_catalog_dir()
    paths = sorted(directory.glob("*.yaml"))
    stamp = tuple((path.name, *_stat_stamp(path)) for path in paths)
    cached = _catalog_cache.get(directory)
    if cached is None or cached[0] != stamp:
        cached = (stamp, _parse_catalog(paths))
        _catalog_cache[directory] = cached
    return dict(cached[1])


_catalog_cache: dict[Path, tuple[tuple[tuple[str, int, int], ...], dict[str, AppDefinition]]] = {}


def _stat_stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


def _parse_catalog(paths: list[Path]) -> dict[str, AppDefinition]:
    apps: dict[str, AppDefinition] = {}
    issues: list[ValidationIssue] = []
    for path in paths:
        try:
            app = load_app(path)
        except PolicyError as exc:
            issues.extend(exc.issues)
            continue
        if app.id in apps:
            issues.append(ValidationIssue(str(path), 1, "id", f"app id {app.id!r} is defined twice",
                                          "give each catalog file its own id"))
        apps[app.id] = app
    if issues:
        raise PolicyError(issues)
    return apps


def parse_policy(
    text: str,
    source: str,
    catalog: dict[str, AppDefinition],
    today: dt.date | None = None,
) -> Policy:
    """Parse and check a policy against the catalog; raise PolicyError with every issue."""
    try:
        policy = parse_model(Policy, text, source)
    except PolicyError as exc:
        # Every problem in one pass: a typo'd app id is said beside a bad mode or date,
        # not only once those are fixed.
        raise PolicyError(_by_line(exc.issues + _reference_issues(text, source, catalog,
                                                                  exc.issues))) from exc
    _, lines = load_with_lines(text)
    issues = check_policy(policy, catalog, source, lines, today or dt.date.today())
    if issues:
        raise PolicyError(issues)
    return policy


def policy_warnings(
    text: str, source: str, policy: Policy, today: dt.date | None = None
) -> list[ValidationIssue]:
    """What is worth saying about a valid policy but must not refuse it: an exception whose
    date has passed (a policy that validates today must still validate the day one lapses;
    agents stop honouring it by their own clock)."""
    today = today or dt.date.today()
    _, lines = load_with_lines(text)
    warnings = []
    for index, rule in enumerate(policy.rules):
        for ex_index, exception in enumerate(rule.exceptions):
            if exception.expires < today:
                path: YamlPath = ("rules", index, "exceptions", ex_index, "expires")
                warnings.append(ValidationIssue(
                    source, line_for(lines, path), _field_name(path),
                    f"exception lapsed on {exception.expires.isoformat()}: agents no longer "
                    "honour it", "remove it, or set a future date if it is still needed"))
    return warnings


def _by_line(issues: list[ValidationIssue]) -> list[ValidationIssue]:
    return sorted(issues, key=lambda issue: issue.line or 0)


def _reference_issues(
    text: str, source: str, catalog: dict[str, AppDefinition],
    already: list[ValidationIssue],
) -> list[ValidationIssue]:
    """Unknown app ids in rules, read from the raw file when the model could not be built."""
    try:
        data, lines = load_with_lines(text)
    except YamlSyntaxError:
        return []
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        return []
    own = data.get("apps")
    # Only text ids: the raw file may hold anything there (a list, a mapping), which the
    # model has reported already.
    known = set(catalog) | {app["id"] for app in own
                            if isinstance(app, dict) and isinstance(app.get("id"), str)} \
        if isinstance(own, list) else set(catalog)
    said = {issue.field for issue in already}
    issues = []
    for index, rule in enumerate(data["rules"]):
        if not isinstance(rule, dict):
            continue
        for key in ("app", "alternative"):
            value = rule.get(key)
            path: YamlPath = ("rules", index, key)
            if isinstance(value, str) and value not in known and _field_name(path) not in said:
                hint = (f"use a catalog id ({', '.join(sorted(map(str, known)))}) or define "
                        "it under `apps:`" if key == "app" else "name a catalog app id")
                issues.append(ValidationIssue(source, line_for(lines, path), _field_name(path),
                                              f"unknown app id {value!r}", hint))
    return issues


def load_policy(
    path: Path, catalog: dict[str, AppDefinition], today: dt.date | None = None
) -> Policy:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError([ValidationIssue(str(path), None, "", f"cannot read the file: {exc}",
                                           "check the path and that it is UTF-8 text")]) from exc
    return parse_policy(text, str(path), catalog, today)


def check_policy(
    policy: Policy,
    catalog: dict[str, AppDefinition],
    source: str,
    lines: dict[YamlPath, int],
    today: dt.date,
) -> list[ValidationIssue]:
    """The checks that need more than one field: ids, alternatives, conflicts, scopes."""
    issues: list[ValidationIssue] = []

    def issue(path: YamlPath, message: str, hint: str) -> None:
        issues.append(ValidationIssue(source, line_for(lines, path), _field_name(path), message,
                                      hint))

    known = dict(catalog)
    for index, app in enumerate(policy.apps):
        if app.id in known:
            issue(("apps", index, "id"), f"app id {app.id!r} is already in the catalog",
                  "give the policy's own app a new id, or use the catalog's")
        known[app.id] = app

    first_rule: dict[str, int] = {}
    for index, rule in enumerate(policy.rules):
        if rule.app not in known:
            issue(("rules", index, "app"), f"unknown app id {rule.app!r}",
                  f"use a catalog id ({', '.join(sorted(known))}) or define it under `apps:`")
        if rule.app in first_rule:
            other = policy.rules[first_rule[rule.app]]
            issue(("rules", index, "app"),
                  f"second rule for {rule.app!r} (verdict {rule.verdict!r}) conflicts with "
                  f"the rule on line {line_for(lines, ('rules', first_rule[rule.app]))} "
                  f"(verdict {other.verdict!r})",
                  "keep one rule per app")
        else:
            first_rule[rule.app] = index
        if rule.verdict == "allow" and rule.action == "terminate":
            issue(("rules", index, "action"), "an allowed app cannot be terminated",
                  "use action `report`, or verdict `deny`")
        if rule.action == "block" and rule.verdict != "deny":
            issue(("rules", index, "action"),
                  f"action `block` needs verdict `deny`, not {rule.verdict!r}",
                  "set `verdict: deny`, or use action `notify`")
        for ex_index, exception in enumerate(rule.exceptions):
            # A lapsed date is a warning (policy_warnings), never an error.
            if not exception.hosts and not exception.groups:
                issue(("rules", index, "exceptions", ex_index),
                      "an exception must name hosts or groups", "add `hosts:` or `groups:`")

    oses = tuple(policy.scope.os) or OS_NAMES
    for index, rule in enumerate(policy.rules):
        if rule.action in BLOCKING_ACTIONS and rule.app in known:
            for message in _self_harm(rule.app, rule.action, known[rule.app], oses):
                issue(("rules", index, "action"), message,
                      "narrow the app's signatures so they cannot match it, or use action "
                      "`notify`")

    verdicts = {rule.app: rule.verdict for rule in policy.rules}
    for index, rule in enumerate(policy.rules):
        if rule.alternative is None:
            continue
        path = ("rules", index, "alternative")
        if rule.alternative not in known:
            issue(path, f"unknown app id {rule.alternative!r}", "name a catalog app id")
        elif verdicts.get(rule.alternative) != "allow":
            issue(path, f"alternative {rule.alternative!r} is not allowed by this policy",
                  f"add a rule `- app: {rule.alternative}` with `verdict: allow`")
    return issues


def _self_harm(
    app_id: str, action: str, app: AppDefinition, oses: tuple[OsName, ...]
) -> list[str]:
    """Why a blocking rule for `app` would harm the machine, one message per reason."""
    messages = [f"rule for {app_id!r} would {action} every process: {value!r} names nothing "
                "but wildcards" for value in wildcard_only(app)]
    hits = list(critical_hits(app, oses))
    if hits:
        others = dict.fromkeys(f"{hit.process.name} on {hit.process.os}" for hit in hits[1:])
        also = f", and also {', '.join(others)}" if others else ""
        messages.append(f"rule for {app_id!r} would {action} {hits[0]}{also}")
    return messages


def exec_time_notes(policy: Policy, catalog: dict[str, AppDefinition]) -> list[str]:
    """What a `block` rule cannot stop at exec: said by `warden policy validate`, not an error.

    At exec the kernel shows the file, not the command line it will run with, so an
    app's `process.cmdline` signatures are left to the process sensor, which ends such
    a process once it runs (in enforce mode).
    """
    known = {**catalog, **{app.id: app for app in policy.apps}}
    notes = []
    for rule in policy.rules:
        app = known.get(rule.app)
        if rule.action == "block" and app is not None and app.signatures.process.cmdline:
            count = len(app.signatures.process.cmdline)
            notes.append(
                f"rule for {rule.app!r}: {count} process.cmdline signature(s) cannot apply at "
                "exec (the kernel shows the file, not its command line); the process sensor "
                "covers them, ending such a process in enforce mode once it runs")
    return notes


def policy_source_to_json(policy: Policy) -> str:
    """A canonical JSON rendering of a validated policy (for storage and diffs)."""
    data: dict[str, Any] = policy.model_dump(mode="json", exclude_defaults=False)
    return json.dumps(data, sort_keys=True, indent=2)


def default_bundle() -> dict[str, Any]:
    """The stock policy (policies/default.yaml) compiled with the stock catalog: what an
    agent enforces from its first second, before any server has sent one."""
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)
