"""The CLI at parity with the dashboard: the real `warden` process against a real server on
loopback — findings show and triage (any state, several ids, by filter), users through the
API, agents named by hostname or id, the policy version number, one password rule, each
command's usage on its own errors, and refused policy changes in the audit log.
SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.server.admin_support import (
    API,
    T0,
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    bearer,
    event,
    finding_for,
    post_events,
    process,
)

# Each test starts the real CLI a dozen times: slow on a busy machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WARDEN = Path(sys.executable).with_name("warden")
EnrolledAgent = Any
Cli = Callable[..., subprocess.CompletedProcess[str]]
NO_NOTIFY_SEND = "notify-send not found: install libnotify-bin (Debian/Ubuntu)"


@pytest.fixture
def warden(live_server: str, admin_token: str, tmp_path: Path) -> Cli:
    """`warden(*argv, token=...)`: the console script with WARDEN_URL / WARDEN_TOKEN set."""
    if not WARDEN.exists():
        pytest.skip(f"the warden console script is not installed beside {sys.executable}")

    def run(*argv: str, token: str = admin_token) -> subprocess.CompletedProcess[str]:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith("WARDEN_")}
        env.update(WARDEN_URL=live_server, WARDEN_TOKEN=token,
                   XDG_CONFIG_HOME=str(tmp_path / "config"))
        return subprocess.run([str(WARDEN), *argv], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout


def failed_notify(time: Any = T0) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": "action", "time": time.isoformat(),
            "finding": finding_for(TELEGRAM_PROCESS),
            "result": {"action": "notify", "ok": False, "detail": NO_NOTIFY_SEND,
                       "mode": "audit"}}


def triage_of(client: TestClient, token: str) -> dict[int, str]:
    items = client.get(f"{API}/findings", headers=bearer(token)).json()["items"]
    return {item["id"]: item["triage"] for item in items}


def test_findings_show_and_triage_to_any_state_by_ids_or_filter(
    warden: Cli, client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    agent = enroll(hostname="lab-3")
    post_events(client, agent.headers, event(TELEGRAM_PROCESS), failed_notify(),
                event(process(77)), event(TELEGRAM_DEB))
    by_key = {item["key"]: item["id"] for item in client.get(
        f"{API}/findings", headers=bearer(admin_token)).json()["items"]}
    first = by_key[finding_for(TELEGRAM_PROCESS)["key"]]
    shown = ok(warden("findings", "show", str(first)))
    assert f"finding {first}: telegram on lab-3" in shown
    assert f"outcome     notify: failed ({NO_NOTIFY_SEND})" in shown
    assert "(not delivered)" in shown
    assert "opened" in shown and f"notify: failed ({NO_NOTIFY_SEND})" in shown.split(
        "timeline", 1)[1]
    assert json.loads(ok(warden("findings", "show", str(first), "--json")))["id"] == first
    # Several ids at once, to a state the old ack/resolve could not set.
    second = by_key[finding_for(process(77))["key"]]
    out = ok(warden("findings", "triage", "false_positive", str(first), str(second),
                    "--comment", "lab image"))
    assert out.startswith("2 finding(s) now false_positive")
    states = triage_of(client, admin_token)
    assert states[first] == states[second] == "false_positive"
    # By filter: every installed finding.
    ok(warden("findings", "triage", "excepted", "--sensor", "installed"))
    assert triage_of(client, admin_token)[by_key[finding_for(TELEGRAM_DEB)["key"]]] \
        == "excepted"
    # One unknown id: nothing changes, and the error names it.
    refused = warden("findings", "resolve", str(first), "999999")
    assert refused.returncode == 1 and "999999" in refused.stderr
    assert triage_of(client, admin_token)[first] == "false_positive"
    # Neither ids nor filters: a usage error with this command's usage.
    bare = warden("findings", "triage", "acknowledged")
    assert bare.returncode == 2
    assert "usage: warden findings triage" in bare.stderr
    listing = ok(warden("findings", "list"))
    assert "OUTCOME" in listing.splitlines()[0] and "notify: failed" in listing


def test_users_through_the_api_with_one_password_rule(
    warden: Cli, client: TestClient, admin_token: str, tmp_path: Path
) -> None:
    password = tmp_path / "password"
    password.write_text("eleven char\n")  # 11: one short of the rule
    short = warden("users", "create", "--username", "alice", "--role", "analyst",
                   "--password-file", str(password))
    assert short.returncode == 2 and "at least 12 characters" in short.stderr
    refused = client.post(f"{API}/users", headers=bearer(admin_token), json={
        "username": "alice", "password": "eleven char", "role": "analyst"})
    assert refused.status_code == 422
    password.write_text("twelve chars\n")
    assert "Created analyst 'alice'" in ok(warden(
        "users", "create", "--username", "alice", "--role", "analyst",
        "--password-file", str(password)))
    table = ok(warden("users", "list")).splitlines()
    assert table[0].split() == ["USERNAME", "ROLE", "STATE", "CREATED"]
    assert table[1].split()[:3] == ["alice", "analyst", "active"]
    assert ok(warden("users", "disable", "--username", "alice")) == "Disabled 'alice'.\n"
    [alice] = json.loads(ok(warden("users", "list", "--json")))["items"]
    assert alice["disabled"] is True
    missing = warden("users", "enable", "--username", "nobody")
    assert missing.returncode == 1 and "no user named 'nobody'" in missing.stderr
    # Audit: who did it, by name.
    audit = ok(warden("audit"))
    assert "WHO" in audit.splitlines()[0] and "user.create" in audit


def test_agents_are_named_by_hostname_or_id_and_show_the_policy_number(
    warden: Cli, client: TestClient, enroll: Callable[..., EnrolledAgent]
) -> None:
    solo = enroll(hostname="solo-1")
    twins = [enroll(hostname="twin"), enroll(hostname="TWIN")]
    etag = client.post(f"{API}/agent/checkin", headers=solo.headers, json={}).json()[
        "policy_etag"]
    client.post(f"{API}/agent/checkin", headers=solo.headers, json={"policy_version": etag})
    rows = {line.split()[1]: line for line in ok(warden("agents", "list")).splitlines()[1:]}
    assert "v1 (current)" in rows["solo-1"]
    ambiguous = warden("agents", "revoke", "twin")
    assert ambiguous.returncode == 1
    assert "2 agents have the hostname 'twin'" in ambiguous.stderr
    assert all(twin.agent_id in ambiguous.stderr for twin in twins)
    assert ok(warden("agents", "revoke", "SOLO-1")) == (
        f"agent solo-1 ({solo.agent_id}) revoked: its token no longer works\n")
    assert ok(warden("agents", "revoke", twins[0].agent_id)).startswith(
        f"agent twin ({twins[0].agent_id}) revoked")
    unknown = warden("agents", "revoke", "nobody-here")
    assert unknown.returncode == 1 and "no agent has the hostname or id" in unknown.stderr
    assert ok(warden("agents", "readmit", "solo-1")).startswith("agent solo-1")


def test_each_command_says_its_own_usage(warden: Cli) -> None:
    for argv, usage in ((["agents", "list", "--bogus"], "usage: warden agents list"),
                        (["findings", "show", "--nope", "1"], "usage: warden findings show"),
                        (["users", "list", "--x"], "usage: warden users list")):
        result = warden(*argv)
        assert result.returncode == 2
        assert result.stderr.startswith(usage), result.stderr
        assert "usage: warden [-h] AREA" not in result.stderr


def test_a_refused_policy_change_is_in_the_audit_log(
    warden: Cli, client: TestClient, api_token: Callable[..., str], tmp_path: Path
) -> None:
    analyst = api_token("analyst")
    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nrules:\n  - app: telegram\n    verdict: deny\n")
    pushed = warden("policy", "push", str(policy), token=analyst)
    assert pushed.returncode == 1 and "admin" in pushed.stderr
    rolled = warden("policy", "rollback", token=analyst)
    assert rolled.returncode == 1
    entries = json.loads(ok(warden("audit", "--json")))["items"]
    refused = [entry for entry in entries if entry["action"] == "policy.refused"]
    assert {entry["target"] for entry in refused} == {"/api/v1/policies",
                                                       "/api/v1/policies/rollback"}
    assert all(entry["after"]["role"] == "analyst" and entry["after"]["needed"] == "admin"
               for entry in refused)
    assert all(entry["actor_name"].endswith("(API token)") for entry in refused)
    # Reads refused are not logged.
    client.get(f"{API}/policies/1/impact", headers=bearer(analyst))
    entries = json.loads(ok(warden("audit", "--json")))["items"]
    assert len([e for e in entries if e["action"] == "policy.refused"]) == 2
