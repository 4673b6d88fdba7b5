"""Property tests for the policy loader: whatever text arrives, the answer is a Policy
or a PolicyError whose every issue names the file, says what is wrong and how to fix
it — never any other exception (a server answering a push with a 500, a CLI with a
traceback). And a valid policy compiles to the same bundle version every time.

Hypothesis runs derandomised (the same examples every run) and without its example
database, so CI and a laptop see the same thing; each property is capped in examples
to keep the whole module well under 20 seconds.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from policies.catalog_model import AppDefinition
from policies.compiler import compile_bundle
from policies.errors import PolicyError
from policies.loader import (
    default_policy_path,
    load_catalog,
    parse_policy,
    policy_source_to_json,
)
from policies.policy_model import Policy

SOURCE = "fuzzed-policy.yaml"
TODAY = dt.date(2026, 11, 28)
CATALOG: dict[str, AppDefinition] = load_catalog()
DEFAULT_TEXT = default_policy_path().read_text(encoding="utf-8")
DEFAULT_DATA: dict[str, Any] = yaml.safe_load(DEFAULT_TEXT)

FUZZ = settings(max_examples=250, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(FUZZ, max_examples=100)

# The words a policy is made of, so random documents get past the top-level checks
# often enough to exercise the deeper ones.
POLICY_KEYS = ["name", "description", "mode", "scope", "apps", "rules", "app", "verdict",
               "action", "alternative", "message", "exceptions", "hosts", "groups", "tags",
               "os", "expires", "reason", "id", "signatures", "process", "names", "exe_globs",
               "cmdline", "sha256", "installed", "network", "cidrs", "ports", "domains",
               "folders", "path", "contains", "install_hints"]
POLICY_WORDS = [*sorted(CATALOG), "deny", "allow", "alert", "audit", "enforce", "report",
                "notify", "terminate", "linux", "macos", "windows", "2031-01-01",
                "10.0.0.0/8", "%APPDATA%/x/*.exe", "(unclosed", "~/Telegram*"]


def check_parse(text: str) -> Policy | None:
    """The property itself: a Policy, or a PolicyError explaining every issue."""
    try:
        policy = parse_policy(text, SOURCE, CATALOG, today=TODAY)
    except PolicyError as exc:
        assert exc.issues, "a PolicyError must carry at least one issue"
        for issue in exc.issues:
            assert issue.file == SOURCE, issue
            assert issue.message.strip(), issue
            assert issue.hint.strip(), f"no hint on how to fix: {issue}"
            assert issue.line is None or issue.line >= 1, issue
            assert str(issue)  # renders for the CLI and the API
        return None
    assert isinstance(policy, Policy)
    return policy


# -- strategies ----------------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(POLICY_WORDS), st.dates(),
)
keys = st.one_of(st.sampled_from(POLICY_KEYS), st.text(max_size=10), st.integers(),
                 st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(keys, children, max_size=5)),
    max_leaves=25,
)
documents = st.one_of(
    values,
    st.dictionaries(st.sampled_from(POLICY_KEYS), values, max_size=6),
    st.fixed_dictionaries({"name": values, "rules": st.lists(
        st.dictionaries(st.sampled_from(POLICY_KEYS), values, max_size=5), max_size=4)}),
)

# Hand-written YAML that stresses the parser rather than the schema.
NASTY_YAML = [
    "a: &x [*x]",                                   # a recursive alias
    "? [a, b]\n: c\n",                              # a list as a mapping key
    "? {a: 1}\n: c\n",                              # a mapping as a key
    "name: t\nrules:\n  - app: telegram\n    verdict: deny\n    exceptions:\n"
    "      - hosts: [a]\n        expires: 2024-13-45\n",  # a date that does not exist
    "name: !!python/object:os.system x\n",          # an unsafe tag
    "name: !custom x\n",                            # an unknown tag
    "<<: {name: t}\nrules: []\n",                   # a merge key
    "name: t\nname: u\nrules:\n  - app: telegram\n    verdict: deny\n",  # duplicate key
    "[" * 2000 + "]" * 2000,                        # deep nesting
    "a:\n" + "".join("  " * n + f"- k{n}:\n" for n in range(1, 400)),
    "\ufeffname: t\n",                              # a byte-order mark
    "--- a\n--- b\n",                               # two documents
    "name: t\x00\n",                                # a NUL
    "",
    "~",
    "1: 2\nnull: 3\ntrue: 4\n",                    # non-text keys at the top
    'name: "\\ud800"\nrules: [{app: telegram, verdict: deny}]\n',  # half a surrogate pair
    '"\\udfff": 1\n',                             # ... as a key
    'name: t\ndescription: "\\udc00"\nrules: [{app: telegram, verdict: deny}]\n',
    "name: !!int x\n",                              # a tag its value does not fit
    "expires: !!timestamp 2024-13-45\n",
    # "Billion laughs": nine aliases of nine aliases of ... nine values.
    "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + n)}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 9)}]\n"
        for n in range(8)),
]


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found.extend(_paths(value, (*prefix, index)))
    return found


def _parent(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


@st.composite
def mutated_default(draw: st.DrawFn) -> str:
    """The stock policy with a few keys dropped, renamed or given values of a wrong type."""
    data = copy.deepcopy(DEFAULT_DATA)
    for _ in range(draw(st.integers(1, 4))):
        paths = [path for path in _paths(data) if path]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = _parent(data, path), path[-1]
        mutation = draw(st.sampled_from(["drop", "rename", "retype", "copy"]))
        if mutation == "drop":
            del parent[last]
        elif mutation == "rename" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(last)
        elif mutation == "copy" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        else:
            parent[last] = draw(values)
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@st.composite
def edited_text(draw: st.DrawFn) -> str:
    """The stock policy's text with lines duplicated (duplicate keys), dropped or
    re-indented, or a stretch of characters replaced."""
    lines = DEFAULT_TEXT.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        if not lines:
            break
        at = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(["duplicate", "drop", "indent", "dedent", "replace"]))
        if edit == "duplicate":
            lines.insert(at, lines[at])
        elif edit == "drop":
            del lines[at]
        elif edit == "indent":
            lines[at] = "  " + lines[at]
        elif edit == "dedent":
            lines[at] = lines[at].lstrip()
        else:
            start = draw(st.integers(0, len(lines[at])))
            lines[at] = lines[at][:start] + draw(st.text(max_size=8)) + lines[at][start + 3:]
    return "\n".join(lines) + "\n"


@st.composite
def valid_policies(draw: st.DrawFn) -> str:
    """A policy the loader must accept: known apps, alternatives that are allowed."""
    apps = draw(st.lists(st.sampled_from(sorted(CATALOG)), min_size=1, unique=True))
    verdicts = {app: draw(st.sampled_from(["deny", "allow", "alert"])) for app in apps}
    allowed = [app for app, verdict in verdicts.items() if verdict == "allow"]
    rules = []
    for app in apps:
        rule: dict[str, Any] = {"app": app, "verdict": verdicts[app]}
        actions = ["report", "notify"] if verdicts[app] == "allow" else \
            ["report", "notify", "terminate"]
        if draw(st.booleans()):
            rule["action"] = draw(st.sampled_from(actions))
        if allowed and verdicts[app] != "allow" and draw(st.booleans()):
            rule["alternative"] = draw(st.sampled_from(allowed))
        if draw(st.booleans()):
            rule["message"] = draw(st.text(max_size=40))
        if draw(st.booleans()):
            rule["exceptions"] = [{
                "hosts": draw(st.lists(st.text(min_size=1, max_size=12), min_size=1,
                                       max_size=3)),
                "expires": draw(st.dates(TODAY, dt.date(2100, 1, 1))).isoformat(),
            }]
        rules.append(rule)
    policy: dict[str, Any] = {
        "name": draw(st.text(min_size=1, max_size=30)),
        "description": draw(st.text(max_size=60)),
        "mode": draw(st.sampled_from(["audit", "enforce"])),
        "scope": {"os": draw(st.lists(st.sampled_from(["linux", "macos", "windows"]),
                                      unique=True)),
                  "groups": draw(st.lists(st.text(min_size=1, max_size=10), max_size=3))},
        "rules": rules,
    }
    return yaml.safe_dump(policy, allow_unicode=True, sort_keys=draw(st.booleans()))


# -- properties ----------------------------------------------------------------


@FUZZ
@given(documents)
def test_any_yaml_document_is_a_policy_or_a_clear_error(document: Any) -> None:
    check_parse(yaml.safe_dump(document, allow_unicode=True))


@FUZZ
@given(st.text(max_size=300))
@example("name: t\n\trules: []\n")
def test_any_text_is_a_policy_or_a_clear_error(text: str) -> None:
    check_parse(text)


@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_are_a_policy_or_a_clear_error(raw: bytes) -> None:
    check_parse(raw.decode("utf-8", errors="replace"))


@pytest.mark.parametrize("text", NASTY_YAML, ids=range(len(NASTY_YAML)))
def test_hostile_yaml_is_a_clear_error(text: str) -> None:
    assert check_parse(text) is None


@FUZZ
@given(mutated_default())
def test_a_mutated_default_policy_is_a_policy_or_a_clear_error(text: str) -> None:
    check_parse(text)


@FUZZ
@given(edited_text())
def test_an_edited_default_policy_text_is_a_policy_or_a_clear_error(text: str) -> None:
    check_parse(text)


def test_json_escapes_of_characters_beyond_the_bmp_are_joined() -> None:
    # What Python's json.dumps writes for an emoji: a surrogate pair of escapes.
    text = '{"name": "chat \\ud83d\\udcac", "rules": [{"app": "telegram", "verdict": "deny"}]}'
    policy = check_parse(text)
    assert policy is not None and policy.name == "chat \U0001f4ac"


def test_a_key_given_twice_is_refused_on_its_second_line() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("name: t\nrules:\n  - app: telegram\n    verdict: deny\n"
                     "rules:\n  - app: telegram\n    verdict: allow\n", SOURCE, CATALOG,
                     today=TODAY)
    [issue] = caught.value.issues
    assert issue.line == 5 and "'rules' appears twice" in issue.message


@FEWER
@given(valid_policies())
def test_a_valid_policy_compiles_to_the_same_version_every_time(text: str) -> None:
    policy = check_parse(text)
    assert policy is not None, "the strategy builds only valid policies"
    first = compile_bundle(policy, CATALOG)
    again = compile_bundle(parse_policy(text, SOURCE, CATALOG, today=TODAY), CATALOG)
    assert first["version"] == again["version"]
    assert first == again
    # Its canonical JSON (how the server stores a pushed policy) is itself a valid
    # policy, and means exactly the same bundle.
    as_json = policy_source_to_json(policy)
    reparsed = parse_policy(as_json, "stored.json", CATALOG, today=TODAY)
    assert compile_bundle(reparsed, CATALOG)["version"] == first["version"]
