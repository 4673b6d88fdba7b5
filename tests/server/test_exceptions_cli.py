"""`warden exceptions ...` against a real server on loopback: grant, merge, list, revoke,
and a machine's request approved; bad input is one clear line and exit 1."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from server.cli import main
from tests.server.admin_support import post_events


def warden(live_server: str, token: str, *args: str) -> list[str]:
    return ["exceptions", *args, "--url", live_server, "--token", token]


def test_grant_list_revoke_and_approve_from_the_command_line(
        live_server: str, admin_token: str, enroll: Any, client: TestClient,
        capsys: pytest.CaptureFixture[str]) -> None:
    agent = enroll(hostname="press-05")
    assert main(warden(live_server, admin_token, "grant", "--app", "telegram", "--host",
                       "press-05", "--days", "30", "--reason", "press office")) == 0
    assert "granted: telegram on host press-05" in capsys.readouterr().out
    assert main(warden(live_server, admin_token, "grant", "--app", "telegram", "--host",
                       "press-05", "--days", "60", "--reason", "press office")) == 0
    assert "extended" in capsys.readouterr().out
    assert main(warden(live_server, admin_token, "list", "--json")) == 0
    [listed] = json.loads(capsys.readouterr().out)["items"]
    assert (listed["app"], listed["hostname"], listed["state"]) == \
        ("telegram", "press-05", "active")
    assert main(warden(live_server, admin_token, "revoke", str(listed["id"]))) == 0
    capsys.readouterr()
    assert main(warden(live_server, admin_token, "list", "--state", "active", "--json")) == 0
    assert json.loads(capsys.readouterr().out)["items"] == []

    # A bad grant: one line naming the field, nothing stored.
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    assert main(warden(live_server, admin_token, "grant", "--app", "telegram", "--host",
                       "press-05", "--until", past, "--reason", "x")) == 1
    assert "until" in capsys.readouterr().err

    post_events(client, agent.headers, {
        "id": str(uuid.uuid4()), "type": "exception_requested",
        "time": dt.datetime.now(dt.UTC).isoformat(),
        "request": {"app": "telegram", "days": 10, "reason": "campaign", "user": "alice"}})
    assert main(warden(live_server, admin_token, "requests", "--json")) == 0
    [pending] = json.loads(capsys.readouterr().out)["items"]
    assert (pending["requested_by"], pending["status"]) == ("alice", "pending")
    assert main(warden(live_server, admin_token, "approve", str(pending["id"]), "--days",
                       "5")) == 0
    assert "approved" in capsys.readouterr().out
    assert main(warden(live_server, admin_token, "list", "--state", "active", "--json")) == 0
    [granted] = json.loads(capsys.readouterr().out)["items"]
    left = dt.datetime.fromisoformat(granted["until"]) - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=4.9) < left <= dt.timedelta(days=5)
