"""Helpers for the admin API tests: real findings, made the way an agent makes them.

Events carry findings the policy engine produced from real observations with
the stock catalog and default policy, and go in through the agent API, so
the admin side reads what agents really send.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from typing import Any

from fastapi.testclient import TestClient

from policies.compiler import compile_bundle
from policies.engine import Engine, HostContext
from policies.loader import default_policy_path, load_catalog, load_policy, parse_policy
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    Observation,
    ProcessObservation,
)

API = "/api/v1"
EVENTS = "/api/v1/agent/events"
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)

TELEGRAM_PROCESS = ProcessObservation(pid=4242, name="telegram-desktop", create_time=1000.0,
                                      exe="/usr/bin/telegram-desktop",
                                      cmdline=("/usr/bin/telegram-desktop", "--", "%u"),
                                      username="alice")
TELEGRAM_DEB = InstalledObservation(source="deb", id="telegram-desktop",
                                    path="/usr/bin/telegram-desktop", version="4.14")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@functools.cache
def default_bundle() -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(load_policy(default_policy_path(), catalog), catalog)


# Telegram denied as in the default policy, and Discord reported for review.
WIDER_POLICY = """\
name: wider
rules:
  - app: telegram
    verdict: deny
    action: notify
    alternative: signal
  - app: signal
    verdict: allow
  - app: discord
    verdict: alert
"""


# Telegram allowed: what an impact preview should flag before anyone activates it.
ALLOW_TELEGRAM = """\
name: telegram-allowed
rules:
  - app: telegram
    verdict: allow
  - app: signal
    verdict: allow
"""


@functools.cache
def bundle_from(text: str) -> dict[str, Any]:
    catalog = load_catalog()
    return compile_bundle(parse_policy(text, "test", catalog), catalog)


def finding_for(observation: Observation, os_name: str = "linux",
                policy: str | None = None) -> dict[str, Any]:
    """What an agent running the default policy (or `policy`) reports for `observation`."""
    bundle = bundle_from(policy) if policy else default_bundle()
    engine = Engine(bundle, HostContext(os=os_name))  # type: ignore[arg-type]
    [finding] = engine.evaluate(observation)
    return finding.as_dict()


def process(pid: int, name: str = "telegram-desktop", exe: str | None = None) -> ProcessObservation:
    return ProcessObservation(pid=pid, name=name, create_time=1000.0 + pid,
                              exe=exe or f"/usr/bin/{name}", cmdline=(exe or name,))


def connection(port: int = 443) -> ConnectionObservation:
    return ConnectionObservation(remote_ip="149.154.167.51", remote_port=port,
                                 local_ip="10.0.0.5", local_port=50123, pid=4242,
                                 process_name="telegram-desktop")


def event(
    observation: Observation = TELEGRAM_PROCESS,
    kind: str = "finding_opened",
    time: dt.datetime = T0,
    os_name: str = "linux",
    policy: str | None = None,
) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": kind, "time": time.isoformat(),
            "finding": finding_for(observation, os_name, policy)}


def post_events(client: TestClient, headers: dict[str, str], *events: dict[str, Any]) -> None:
    response = client.post(EVENTS, json={"events": list(events)}, headers=headers)
    assert response.status_code == 200, response.text
    assert len(response.json()["accepted"]) == len(events)


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["message"]
    if code is not None:
        assert error["code"] == code, error
    return error
