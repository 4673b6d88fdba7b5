"""App names reach desktop notifiers and pages: validation keeps them to a safe set."""

from __future__ import annotations

import datetime as dt

import pytest

from policies.errors import PolicyError
from policies.loader import load_catalog, parse_policy

TODAY = dt.date(2026, 11, 28)
POLICY = ("name: t\napps:\n  - id: {id}\n    name: {name}\n"
          "rules:\n  - app: {id}\n    verdict: deny\n")


@pytest.mark.parametrize(("name", "words"), [
    # (a hostile app name, what the error says about it)
    ("'-e do shell script \"id\"'", "has '\"'"),
    ("'-e display alert x'", "starts with '-'"),
    ("'--help'", "starts with '-'"),
    ("'Chat $(id)'", "has '$'"),
    ("'Chat `id`'", "has '`'"),
    ("'Chat\"; rm -rf ~'", "has '\"', ';', '~'"),
    ("\"Chat' & calc\"", "has '&', \"'\""),
    ("\"Chat\\nline two\"", "has '\\n'"),
    ("'<b>Chat</b>'", "has '/', '<', '>'"),
    ("' Chat'", "starts with ' '"),
    ("''", "is 0 characters long"),
    ("'" + "C" * 65 + "'", "is 65 characters long"),
])
def test_hostile_app_names_are_refused_with_the_line_and_the_fix(name: str, words: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY.format(id="x", name=name), "p.yaml", load_catalog(), TODAY)
    [issue] = caught.value.issues
    assert (issue.file, issue.line, issue.field) == ("p.yaml", 4, "apps[0].name")
    assert words in issue.message
    assert issue.hint.startswith("use 1 to 64 letters, digits, spaces and . _ + ( ) -")


@pytest.mark.parametrize("name", ["Corp chat (a Telegram rebrand)", "Acme Chat 2.0",
                                  "Mattermost-Desktop", "Телеграм", "微信", "C++ chat"])
def test_everyday_names_are_accepted(name: str) -> None:
    policy = parse_policy(POLICY.format(id="x", name=f"'{name}'"), "p.yaml", load_catalog(),
                          TODAY)
    assert policy.apps[0].name == name


@pytest.mark.parametrize("app_id", ["-x", "X", "x y", "x$", "x" * 65])
def test_app_ids_are_lower_case_words(app_id: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(POLICY.format(id=f"'{app_id}'", name="X"), "p.yaml", load_catalog(), TODAY)
    assert caught.value.issues[0].field == "apps[0].id"
