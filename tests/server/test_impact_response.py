"""The impact preview counts what matters to the people affected: a verdict that stays
`deny` is still a change when the agent goes from telling the user to ending the app (audit
-> enforce, notify -> terminate), per machine, in the API, the dashboard and the CLI."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from server.cli.policy_views import impact_text
from server.schemas.policies import ImpactPreview
from tests.server.admin_support import (
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    connection,
    event,
    post_events,
)
from tests.server.dashboard_support import log_in_with_token
from tests.server.test_admin_policies import impact_of, pushed

EnrolledAgent = Any

STRICT = """\
name: strict
mode: {mode}
rules:
  - app: telegram
    verdict: deny
    action: {action}
    alternative: signal
  - app: signal
    verdict: allow
"""


@pytest.mark.parametrize(("mode", "action", "process_after"), [
    # (the new version's mode and action, what the agent would do about the process)
    ("enforce", "terminate", "notify + terminate"),
    ("audit", "terminate", "notify (would terminate: audit mode)"),
])
def test_going_to_terminate_is_a_change_though_the_verdict_stays(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent],
    mode: str, action: str, process_after: str,
) -> None:
    desk = enroll(hostname="desk-01")
    enroll(hostname="clean-pc")
    post_events(client, desk.headers, event(TELEGRAM_PROCESS), event(TELEGRAM_DEB),
                event(connection()))
    number = pushed(client, admin_token, STRICT.format(mode=mode, action=action))
    body = impact_of(client, admin_token, number)
    # Only the running process is handled differently: an install or a connection is
    # told about, never terminated, under either version.
    [change] = body["changes"]
    assert (change["hostname"], change["sensor"], change["before"], change["after"]) == (
        "desk-01", "process", "deny", "deny")
    assert (change["before_response"], change["after_response"]) == ("notify", process_after)
    totals = body["totals"]
    assert (totals["changes"], totals["response_changes"], totals["agents_affected"]) == (
        1, 1, 1)
    assert totals["newly_terminated"] == (1 if mode == "enforce" else 0)
    assert totals["newly_denied"] == totals["no_longer_denied"] == 0


def test_the_dashboard_and_the_cli_show_the_response_change(
    app: FastAPI, client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    desk = enroll(hostname="desk-01")
    post_events(client, desk.headers, event(TELEGRAM_PROCESS))
    number = pushed(client, admin_token, STRICT.format(mode="enforce", action="terminate"))
    page = log_in_with_token(app, admin_token).get(f"/policies/{number}/impact").text
    assert 'id="response-changes"' in page and "1 newly terminated" in page
    assert "notify + terminate" in page
    text = impact_text(ImpactPreview.model_validate(impact_of(client, admin_token, number)))
    assert "agent response        1 change(s), 1 newly terminated" in text
    header, row = text.splitlines()[-2:]
    assert header.split()[:6] == ["HOST", "GROUP", "APP", "SENSOR", "NOW", "AFTER"]
    assert "notify + terminate" in row and row.split()[:6] == [
        "desk-01", "-", "telegram", "process", "deny", "deny"]
