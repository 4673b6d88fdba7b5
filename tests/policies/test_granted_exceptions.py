"""The engine with signed exceptions in force (`HostContext.granted`): a table of cases."""

from __future__ import annotations

import pytest

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import load_catalog, parse_policy
from policies.observations import ProcessObservation

POLICY = """
name: granted
mode: enforce
rules:
  - app: telegram
    verdict: deny
    action: terminate
    alternative: signal
  - app: discord
    verdict: alert
  - app: signal
    verdict: allow
"""
NAMES = {"telegram": "telegram-desktop", "discord": "Discord", "signal": "signal-desktop"}


def finding(app: str, granted: frozenset[str]) -> tuple[str, str] | None:
    catalog = load_catalog()
    bundle = compile_bundle(parse_policy(POLICY, "granted.yaml", catalog), catalog)
    engine = Engine(bundle, HostContext(os="linux", granted=granted))
    found = engine.evaluate(ProcessObservation(pid=10, name=NAMES[app], create_time=1.0))
    return (found[0].verdict, found[0].action) if found else None


@pytest.mark.parametrize(("app", "granted", "expected"), [
    # Denied and not excepted: the rule as written.
    ("telegram", frozenset(), ("deny", "terminate")),
    # Denied and excepted here: reported, never acted on.
    ("telegram", frozenset({"telegram"}), ("excepted", "report")),
    # An exception for another app changes nothing for this one.
    ("telegram", frozenset({"discord"}), ("deny", "terminate")),
    # Alerted apps are excepted the same way.
    ("discord", frozenset({"discord"}), ("excepted", "report")),
    # An allowed app stays unreported, excepted or not.
    ("signal", frozenset({"signal"}), None),
])
def test_granted_apps_are_reported_as_excepted(app: str, granted: frozenset[str],
                                               expected: tuple[str, str] | None) -> None:
    assert finding(app, granted) == expected
