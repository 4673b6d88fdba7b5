"""The impact preview re-evaluates an agent's evidence in linear time, whatever it holds.

A hostile agent can post any command line as evidence; with Python's `re` a 3 KB
one took the preview 5.9 s and stalled /healthz. Here the evidence is 300 KB,
so a backtracking engine would not finish within the test's timeout.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from policies.observations import ProcessObservation
from tests.server.admin_support import (
    ALLOW_TELEGRAM,
    API,
    TELEGRAM_PROCESS,
    bearer,
    event,
    post_events,
)
from tests.server.conftest import EnrolledAgent

FLATPAK = ProcessObservation(pid=77, name="flatpak", create_time=1000.0, exe="/usr/bin/flatpak",
                             cmdline=("flatpak", "run", "org.telegram.desktop"),
                             username="alice")


def test_hostile_evidence_is_re_evaluated_quickly_and_flagged_as_unevaluable(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    agent = enroll(hostname="desk-01")
    hostile = event(FLATPAK)
    # What a hostile agent sends instead of the engine's bounded evidence.
    hostile["finding"]["evidence"]["cmdline"] = ["flatpak"] + ["flatpak run " * 2500] * 10
    post_events(client, agent.headers, hostile, event(TELEGRAM_PROCESS))
    response = client.post(f"{API}/policies", content=ALLOW_TELEGRAM,
                           headers={**bearer(admin_token), "Content-Type": "application/yaml"})
    assert response.status_code == 201, response.text
    number = response.json()["version_number"]
    impact = client.get(f"{API}/policies/{number}/impact", headers=bearer(admin_token))
    assert impact.status_code == 200, impact.text
    totals = impact.json()["totals"]
    # The padded command line matches no signature under either version: unevaluable,
    # not a change; the real Telegram process flips from deny to allow.
    assert (totals["findings_evaluated"], totals["unevaluable"], totals["changes"]) == (2, 1, 1)
    assert client.get("/healthz").status_code == 200
