"""The real `warden` admin CLI, as a separate process, against the real server on loopback.

Credentials come from WARDEN_URL / WARDEN_TOKEN, as an administrator would set them.
Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.host.machine import MachineKey
from tests.server.admin_support import (
    ALLOW_TELEGRAM,
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    bearer,
    event,
)

WARDEN = Path(sys.executable).with_name("warden")
Facts = Callable[..., dict[str, Any]]


def signed(facts: dict[str, Any], key: MachineKey) -> dict[str, Any]:
    return {**facts, **key.proof(facts["machine_id"])}


@pytest.fixture
def warden(live_server: str, admin_token: str, tmp_path: Path) -> Callable[..., str]:
    if not WARDEN.exists():
        pytest.skip(f"the warden console script is not installed beside {sys.executable}")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("WARDEN_")}
    env.update(WARDEN_URL=live_server, WARDEN_TOKEN=admin_token,
               XDG_CONFIG_HOME=str(tmp_path / "config"))

    def run(*argv: str) -> str:
        done = subprocess.run([str(WARDEN), *argv], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert done.returncode == 0, (argv, done.stdout, done.stderr)
        return done.stdout

    return run


def test_an_administrator_session_with_the_cli(
    warden: Callable[..., str], live_server: str, enroll_secret: str, admin_token: str,
    host_facts: Facts, tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        enrolled = http.post("/api/v1/agent/enroll", json=host_facts(hostname="pc-cli"),
                             headers=bearer(enroll_secret)).json()
        agent = bearer(enrolled["agent_token"])
        posted = http.post("/api/v1/agent/events", headers=agent,
                           json={"events": [event(TELEGRAM_PROCESS), event(TELEGRAM_DEB)]})
        assert posted.status_code == 200, posted.text

        policy = tmp_path / "allow.yaml"
        policy.write_text(ALLOW_TELEGRAM, encoding="utf-8")
        assert warden("policy", "push", str(policy)) == (
            f"pushed {policy} as policy version 2\n"
            "activate it with: warden policy activate 2\n")
        table = warden("policy", "list").splitlines()
        assert table[0].split()[:4] == ["VERSION", "NAME", "MODE", "ACTIVE"]
        assert [line.split()[:2] for line in table[1:]] == [["1", "default"],
                                                            ["2", "telegram-allowed"]]
        impact = json.loads(warden("policy", "impact", "2", "--json"))
        assert {(c["app"], c["before"], c["after"]) for c in impact["changes"]} == {
            ("telegram", "deny", "allow")}
        # The source hunks of the readable diff (line numbers of both versions, then +/-).
        assert "+     verdict: allow" in warden("policy", "diff", "1", "2")

        listed = json.loads(warden("findings", "list", "--app", "telegram", "--json"))["items"]
        assert sorted(item["sensor"] for item in listed) == ["installed", "process"]
        assert {item["host"] for item in listed} == {"pc-cli"}
        finding = listed[0]["id"]
        assert warden("findings", "ack", str(finding), "--comment", "called the user") == (
            f"finding {finding}: acknowledged\n")
        triaged = http.get(f"/api/v1/findings/{finding}", headers=bearer(admin_token)).json()
        assert (triaged["triage"], triaged["triage_comment"]) == ("acknowledged",
                                                                  "called the user")

        export = tmp_path / "findings.csv"
        warden("findings", "export", "--format", "csv", "--triage", "acknowledged",
               "-o", str(export))
        rows = list(csv.DictReader(export.read_text(encoding="utf-8").splitlines()))
        assert [int(row["id"]) for row in rows] == [finding]

        agents = warden("agents", "list").splitlines()
        assert agents[0].split()[:2] == ["ID", "HOSTNAME"]
        assert agents[1].split()[:2] == [enrolled["agent_id"], "pc-cli"]
        assert "active" in agents[1].split()

        created = warden("secrets", "create", "--group", "ops")
        fields = dict(line.split(": ", 1) for line in created.splitlines())
        assert fields["group"] == "ops"
        joined = http.post("/api/v1/agent/enroll", json=host_facts(hostname="ops-pc"),
                           headers=bearer(fields["secret"]))
        assert joined.status_code == 201 and joined.json()["group"] == "ops"

        assert warden("policy", "activate", "2") == "policy version 2 is now active\n"
        served = http.get("/api/v1/agent/policy", headers=agent).json()
        assert served["bundle"]["rules"]["telegram"]["verdict"] == "allow"
        assert warden("policy", "rollback") == "rolled back: policy version 1 is active again\n"
        actions = [entry["action"] for entry in json.loads(warden("audit", "--json"))["items"]]
        assert actions[:4] == ["policy.rollback", "policy.activate", "agent.enroll",
                               "secret.create"]


def test_revoke_and_readmit_a_machine_with_the_cli(
    warden: Callable[..., str], live_server: str, enroll_secret: str, host_facts: Facts,
) -> None:
    facts = host_facts(hostname="pc-rebuilt")
    key = MachineKey.generate()
    with httpx.Client(base_url=live_server, timeout=30) as http:
        first = http.post("/api/v1/agent/enroll", json=signed(facts, key),
                          headers=bearer(enroll_secret))
        agent_id, old_token = first.json()["agent_id"], first.json()["agent_token"]

        # Named by hostname and id, so the administrator sees which machine it was.
        assert warden("agents", "revoke", agent_id) == (
            f"agent pc-rebuilt ({agent_id}) revoked: its token no longer works\n")
        refused = http.post("/api/v1/agent/enroll", json=facts, headers=bearer(enroll_secret))
        assert (refused.status_code, refused.json()["error"]["code"]) == (403, "agent_revoked")

        assert warden("agents", "readmit", agent_id) == (
            f"agent pc-rebuilt ({agent_id}) re-admitted: the machine can enroll again and gets "
            "a new token\n")
        assert "revoked" not in warden("agents", "list").splitlines()[1].split()
        # The machine proves itself with its key: re-admission keeps the bound key.
        again = http.post("/api/v1/agent/enroll", json=signed(facts, key),
                          headers=bearer(enroll_secret))
        assert again.status_code == 201, again.text
        assert again.json()["agent_id"] == agent_id
        new_token = again.json()["agent_token"]
        checkin = "/api/v1/agent/checkin"
        assert http.post(checkin, json={}, headers=bearer(new_token)).status_code == 200
        assert http.post(checkin, json={}, headers=bearer(old_token)).status_code == 401

    actions = [entry["action"] for entry in json.loads(warden("audit", "--json"))["items"]]
    assert actions[:3] == ["agent.reenroll", "agent.readmit", "agent.revoke"]


def test_approve_and_reject_a_held_re_enrollment_with_the_cli(
    warden: Callable[..., str], live_server: str, enroll_secret: str, host_facts: Facts,
) -> None:
    facts = host_facts(hostname="pc-reinstalled")
    old, new = MachineKey.generate(), MachineKey.generate()
    enroll = "/api/v1/agent/enroll"
    with httpx.Client(base_url=live_server, timeout=30) as http:
        first = http.post(enroll, json=signed(facts, old), headers=bearer(enroll_secret))
        agent_id, old_token = first.json()["agent_id"], first.json()["agent_token"]
        assert warden("agents", "reenrollments") == ""
        held = http.post(enroll, json=signed(facts, new), headers=bearer(enroll_secret))
        assert (held.status_code, held.json()["error"]["code"]) == (409, "reenrollment_pending")
        [row] = json.loads(warden("agents", "reenrollments", "--json"))["items"]
        assert (row["agent_id"], row["public_key"]) == (agent_id, new.public_key)
        assert agent_id in warden("agents", "reenrollments")

        assert warden("agents", "reject-reenroll", agent_id) == (
            f"re-enrollment of agent {agent_id} rejected: the agent keeps its current token\n")
        held = http.post(enroll, json=signed(facts, new), headers=bearer(enroll_secret))
        assert held.status_code == 409
        shown = warden("agents", "approve-reenroll", agent_id).splitlines()
        assert shown[0].startswith(f"pending: asked as pc-reinstalled from 127.0.0.1 with key "
                                   f"{new.public_key} (1 key(s) seen)")
        assert shown[1] == (f"re-enrollment of agent {agent_id} approved: the agent with key "
                            f"{new.public_key} may enroll once; the current token works until "
                            "then")
        checkin = "/api/v1/agent/checkin"
        assert http.post(checkin, json={}, headers=bearer(old_token)).status_code == 200
        again = http.post(enroll, json=signed(facts, new), headers=bearer(enroll_secret))
        assert (again.status_code, again.json()["agent_id"]) == (201, agent_id)
        assert http.post(checkin, json={}, headers=bearer(old_token)).status_code == 401

    actions = [entry["action"] for entry in json.loads(warden("audit", "--json"))["items"]]
    assert actions[:5] == ["agent.reenroll", "agent.reenroll_approve", "agent.reenroll_pending",
                           "agent.reenroll_reject", "agent.reenroll_pending"]
