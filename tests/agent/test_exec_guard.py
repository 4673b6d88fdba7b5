"""The exec guard follows the policy: on only for `block` rules, and says why when it cannot."""

from __future__ import annotations

from typing import Any

from agent.prevention.guard import ExecGuard

BLOCKING = "name: p\nmode: enforce\nrules:\n  - {app: telegram, verdict: deny, action: block}\n"
NOTIFYING = "name: p\nrules:\n  - {app: telegram, verdict: deny, action: notify}\n"
OUT_OF_SCOPE = ("name: p\nscope: {os: [windows]}\nrules:\n"
                "  - {app: telegram, verdict: deny, action: block}\n")


def test_without_root_the_guard_reports_fallback_and_blocks_nothing(make_engine: Any) -> None:
    guard = ExecGuard(lambda blocked: None, privileged=False)
    guard.update(make_engine(BLOCKING))
    health = guard.health()
    assert health is not None and health.state == "fallback"
    assert "needs Linux and root" in health.detail and "process sensor" in health.detail
    guard.update(make_engine(NOTIFYING))  # no block rule any more: nothing to say
    assert guard.health() is None


def test_a_policy_without_block_rules_in_force_starts_nothing(make_engine: Any) -> None:
    guard = ExecGuard(lambda blocked: None, privileged=True)
    for text in (NOTIFYING, OUT_OF_SCOPE):
        guard.update(make_engine(text))
        assert guard.health() is None
    guard.stop()
