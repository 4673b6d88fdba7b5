"""`/api/v1/policies` and `/api/v1/recommendations`: upload, validation errors with lines,
list, show, diff, activate / roll back as agents see it, impact preview, alternatives."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from policies.compiler import compile_bundle
from policies.engine import Engine
from policies.loader import default_policy_path, load_catalog, load_policy
from server.crypto.signing import verify_bundle
from server.store import audit, impact
from tests.server.admin_support import (
    ALLOW_TELEGRAM,
    API,
    T0,
    TELEGRAM_DEB,
    TELEGRAM_PROCESS,
    WIDER_POLICY,
    assert_error,
    bearer,
    connection,
    event,
    post_events,
    process,
)

EnrolledAgent = Any
DB = sessionmaker[Session]
POLICY_URL = "/api/v1/agent/policy"
DEFAULT_TEXT = default_policy_path().read_text(encoding="utf-8")
ENFORCE_TEXT = DEFAULT_TEXT.replace("mode: audit", "mode: enforce")
INVALID = """\
name: broken
rules:
  - app: telegram
    verdict: forbid
  - app: icq
    verdict: deny
"""


def push(client: TestClient, token: str, text: str,
         content_type: str = "application/yaml") -> Any:
    return client.post(f"{API}/policies", content=text.encode(),
                       headers={**bearer(token), "Content-Type": content_type})


def pushed(client: TestClient, token: str, text: str) -> int:
    response = push(client, token, text)
    assert response.status_code == 201, response.text
    number: int = response.json()["version_number"]
    return number


def audit_actions(db: DB, prefix: str) -> list[Any]:
    with db() as session:
        return list(reversed(audit.list_entries(session, action=prefix)))


# -- upload ---------------------------------------------------------------------


def test_upload_stores_a_signed_inactive_version(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    response = push(client, admin_token, ENFORCE_TEXT)
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["version_number"], created["name"], created["mode"], created["active"]) == (
        2, "default", "enforce", False)
    assert created["created_by"].endswith(":initial admin")
    shown = client.get(f"{API}/policies/2", headers=bearer(admin_token)).json()
    assert shown["source"] == ENFORCE_TEXT
    assert shown["source_format"] == "yaml"
    assert shown["bundle"]["version"] == created["version"]
    assert shown["bundle"]["policy"]["mode"] == "enforce"
    assert verify_bundle(enrolled_agent.public_key, shown["bundle"], shown["signature"])
    listed = client.get(f"{API}/policies", headers=bearer(admin_token)).json()["items"]
    assert [(item["version_number"], item["active"]) for item in listed] == [(1, True),
                                                                             (2, False)]
    [entry] = audit_actions(db, "policy.create")[-1:]
    assert entry.target == "policy:2" and entry.after["mode"] == "enforce"


def test_upload_accepts_json_and_plain_text(client: TestClient, admin_token: str) -> None:
    as_json = json.dumps({"name": "json-policy", "mode": "audit",
                          "rules": [{"app": "telegram", "verdict": "deny"}]})
    response = push(client, admin_token, as_json, "application/json")
    assert response.status_code == 201, response.text
    shown = client.get(f"{API}/policies/{response.json()['version_number']}",
                       headers=bearer(admin_token)).json()
    assert (shown["source_format"], shown["name"]) == ("json", "json-policy")
    assert push(client, admin_token, DEFAULT_TEXT, "text/plain; charset=utf-8").status_code == 201
    assert push(client, admin_token, DEFAULT_TEXT, "text/yaml").status_code == 201


def test_an_invalid_policy_is_422_with_lines_and_nothing_is_stored(
    client: TestClient, admin_token: str, db: DB
) -> None:
    error = assert_error(push(client, admin_token, INVALID), 422, "invalid_policy")
    # Every problem in one pass: the bad verdict and the unknown app (line 5) together.
    assert error["details"][0] == {"file": "upload", "line": 4, "field": "rules[0].verdict",
                                   "message": "Input should be 'deny', 'allow' or 'alert'",
                                   "hint": "use one of the allowed values"}
    assert [(d["line"], d["field"]) for d in error["details"]] == [
        (4, "rules[0].verdict"), (5, "rules[1].app")]
    fixed_verdict = INVALID.replace("forbid", "deny")
    error = assert_error(push(client, admin_token, fixed_verdict), 422, "invalid_policy")
    assert [(d["line"], d["field"]) for d in error["details"]] == [(5, "rules[1].app")]
    assert "icq" in error["details"][0]["message"]
    syntax = assert_error(push(client, admin_token, "name: x\nrules: [\n  - app\n"), 422,
                          "invalid_policy")
    assert (syntax["details"][0]["line"], syntax["details"][0]["file"]) == (3, "upload")
    assert syntax["details"][0]["message"].startswith("YAML syntax error")
    listed = client.get(f"{API}/policies", headers=bearer(admin_token)).json()["items"]
    assert [item["version_number"] for item in listed] == [1]
    assert audit_actions(db, "policy.create")[-1].target == "policy:1"


def test_upload_refuses_other_media_types_and_bad_text(client: TestClient,
                                                       admin_token: str) -> None:
    assert_error(push(client, admin_token, DEFAULT_TEXT, "application/x-www-form-urlencoded"),
                 415)
    response = client.post(f"{API}/policies", content=DEFAULT_TEXT.encode(),
                           headers=bearer(admin_token))
    assert_error(response, 415)
    assert_error(client.post(f"{API}/policies", content=b"name: \xff\xfe",
                             headers={**bearer(admin_token), "Content-Type": "text/plain"}),
                 422, "malformed")
    assert_error(push(client, admin_token, ""), 422, "invalid_policy")


# -- diff -----------------------------------------------------------------------


def test_diff_of_two_versions(client: TestClient, admin_token: str) -> None:
    pushed(client, admin_token, ENFORCE_TEXT)
    response = client.get(f"{API}/policies/diff?from=1&to=2", headers=bearer(admin_token))
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"]) == (1, 2)
    lines = body["diff"].splitlines()
    assert lines[:2] == ["--- policy 1 (default)", "+++ policy 2 (default)"]
    assert "-mode: audit" in lines and "+mode: enforce" in lines
    assert sum(1 for line in lines if line.startswith(("+", "-"))) == 4
    same = client.get(f"{API}/policies/diff?from=2&to=2", headers=bearer(admin_token)).json()
    assert same["diff"] == ""
    assert_error(client.get(f"{API}/policies/diff?from=1&to=9", headers=bearer(admin_token)),
                 404)
    assert_error(client.get(f"{API}/policies/diff?from=1", headers=bearer(admin_token)), 422)


def test_diff_of_a_source_without_a_final_newline(client: TestClient, admin_token: str) -> None:
    pushed(client, admin_token, ALLOW_TELEGRAM.rstrip("\n"))
    pushed(client, admin_token, ALLOW_TELEGRAM.rstrip("\n").replace("allowed", "ok"))
    diff = client.get(f"{API}/policies/diff?from=2&to=3", headers=bearer(admin_token)).json()
    assert "-name: telegram-allowed\n+name: telegram-ok\n" in diff["diff"]


# -- activate, roll back ---------------------------------------------------------


def test_activate_and_rollback_change_what_agents_get(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent, db: DB
) -> None:
    def served() -> tuple[str, dict[str, Any]]:
        response = client.get(POLICY_URL, headers=enrolled_agent.headers)
        assert response.status_code == 200
        body = response.json()
        assert verify_bundle(enrolled_agent.public_key, body["bundle"], body["signature"])
        return response.headers["etag"], body["bundle"]

    first_etag, first = served()
    number = pushed(client, admin_token, ALLOW_TELEGRAM)
    assert served()[0] == first_etag  # stored, not active yet
    response = client.post(f"{API}/policies/{number}/activate", headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    assert (response.json()["version_number"], response.json()["active"]) == (number, True)
    second_etag, second = served()
    assert second_etag != first_etag
    assert second_etag == f'"{second["version"]}"'
    assert second["rules"]["telegram"]["verdict"] == "allow"
    stale = client.get(POLICY_URL, headers={**enrolled_agent.headers,
                                            "If-None-Match": first_etag})
    assert stale.status_code == 200
    checkin = client.post("/api/v1/agent/checkin", json={}, headers=enrolled_agent.headers)
    assert checkin.json()["policy_etag"] == second["version"]

    rolled = client.post(f"{API}/policies/rollback", headers=bearer(admin_token))
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["version_number"] == 1
    assert served() == (first_etag, first)
    # A second rollback undoes the first.
    client.post(f"{API}/policies/rollback", headers=bearer(admin_token))
    assert served()[0] == second_etag
    listed = client.get(f"{API}/policies", headers=bearer(admin_token)).json()["items"]
    assert [item["active"] for item in listed] == [False, True]

    entries = audit_actions(db, "policy.*")
    assert [entry.action for entry in entries][-3:] == [
        "policy.activate", "policy.rollback", "policy.rollback"]
    activation = entries[-3]
    assert numbers(activation.before) == {"active": 1, "previous": None}
    assert numbers(activation.after) == {"active": number, "previous": 1}
    assert numbers(entries[-2].before) == {"active": number, "previous": 1}
    assert numbers(entries[-2].after) == {"active": 1, "previous": number}
    # Each of the three, the rollbacks too, signed a higher activation serial.
    serials = [activation.before["activation_serial"],
               *(entry.after["activation_serial"] for entry in entries[-3:])]
    assert serials == sorted(set(serials)), serials


def numbers(state: dict[str, Any]) -> dict[str, Any]:
    return {"active": state["active"], "previous": state["previous"]}


def test_activate_unknown_and_rollback_with_nothing_before(
    client: TestClient, admin_token: str
) -> None:
    assert_error(client.post(f"{API}/policies/7/activate", headers=bearer(admin_token)), 404)
    assert_error(client.post(f"{API}/policies/rollback", headers=bearer(admin_token)), 409,
                 "nothing_to_roll_back")
    assert_error(client.get(f"{API}/policies/7", headers=bearer(admin_token)), 404)


# -- impact preview ---------------------------------------------------------------


def impact_of(client: TestClient, token: str, number: int, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/policies/{number}/impact", params=params,
                          headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_impact_of_allowing_telegram_flips_open_deny_findings_to_allow(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent], db: DB
) -> None:
    desk = enroll(hostname="desk-01")
    gone = enroll(hostname="old-laptop")
    quiet = enroll(hostname="quiet")
    post_events(client, desk.headers, event(TELEGRAM_PROCESS), event(TELEGRAM_DEB),
                event(connection()))
    post_events(client, gone.headers, event(TELEGRAM_PROCESS))
    # Resolved findings are history, not impact; a revoked agent gets no policy at all.
    post_events(client, quiet.headers, event(process(3)),
                event(process(3), "finding_resolved", T0.replace(hour=13)))
    client.post(f"{API}/agents/{gone.agent_id}/revoke", headers=bearer(admin_token))
    number = pushed(client, admin_token, ALLOW_TELEGRAM)
    body = impact_of(client, admin_token, number)
    assert (body["version_number"], body["active_version_number"]) == (number, 1)
    changes = body["changes"]
    assert {(c["hostname"], c["app"], c["sensor"], c["before"], c["after"]) for c in changes} == {
        ("desk-01", "telegram", "process", "deny", "allow"),
        ("desk-01", "telegram", "installed", "deny", "allow"),
        ("desk-01", "telegram", "network", "deny", "allow")}
    assert all(c["agent_id"] == desk.agent_id and c["finding_id"] for c in changes)
    assert body["totals"] == {"agents_evaluated": 1, "agents_affected": 1,
                              "findings_evaluated": 3, "unevaluable": 0, "changes": 3,
                              "newly_denied": 0, "no_longer_denied": 3,
                              # Allowed: the agent stops telling the user.
                              "response_changes": 3, "newly_terminated": 0}
    assert body["truncated"] is False
    # Nothing changes until it is activated; the active version itself changes nothing.
    assert impact_of(client, admin_token, 1)["totals"]["changes"] == 0
    limited = impact_of(client, admin_token, number, limit=1)
    assert (len(limited["changes"]), limited["truncated"]) == (1, True)
    assert limited["totals"]["changes"] == 3


POLICY_WITH_FORK = """\
name: stricter
rules:
  - app: telegram
    verdict: deny
    alternative: signal
    exceptions:
      - hosts: [exempt-pc]
        expires: 2999-01-01
        reason: liaison with a partner that only uses Telegram
  - app: signal
    verdict: allow
  - app: discord
    verdict: deny
  - app: corp-chat
    verdict: alert
apps:
  - id: corp-chat
    name: Corp chat (a Telegram rebrand)
    signatures:
      process:
        names: [telegram-desktop]
"""


def test_impact_reports_exceptions_new_denials_new_matches_and_thin_evidence(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    exempt = enroll(hostname="exempt-pc")
    chatty = enroll(hostname="chatty")
    post_events(client, exempt.headers, event(TELEGRAM_DEB))
    discord = event(process(5, "Discord"), policy=WIDER_POLICY)
    thin = event(process(6))
    thin["finding"]["evidence"] = {"pid": 6}  # nothing to match on
    post_events(client, chatty.headers, discord, thin, event(TELEGRAM_PROCESS))
    number = pushed(client, admin_token, POLICY_WITH_FORK)
    body = impact_of(client, admin_token, number)
    rows = {(c["hostname"], c["app"], c["before"], c["after"], c["finding_id"] is None)
            for c in body["changes"]}
    assert rows == {
        ("exempt-pc", "telegram", "deny", "excepted", False),
        ("chatty", "discord", "alert", "deny", False),
        # Still denied, but the new rule only reports it: the user is no longer told.
        ("chatty", "telegram", "deny", "deny", False),
        # The recorded telegram-desktop process also matches the policy's own app.
        ("chatty", "corp-chat", "none", "alert", True),
    }
    assert [c["hostname"] for c in body["changes"]] == ["chatty", "chatty", "chatty",
                                                        "exempt-pc"]
    assert body["totals"]["unevaluable"] == 1
    assert body["totals"]["newly_denied"] == 1
    assert body["totals"]["no_longer_denied"] == 1
    assert body["totals"]["agents_affected"] == 2


def test_a_policy_without_the_apps_rule_stops_reporting_it(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    post_events(client, enrolled_agent.headers, event(TELEGRAM_PROCESS))
    number = pushed(client, admin_token, "name: signal-only\nrules:\n  - app: signal\n"
                    "    verdict: allow\n")
    [change] = impact_of(client, admin_token, number)["changes"]
    assert (change["app"], change["before"], change["after"]) == ("telegram", "deny", "none")


@pytest.mark.parametrize(("sensor", "evidence", "expected"), [
    ("process", {"pid": 1, "name": "Telegram", "exe": None, "cmdline": ["a", "b"],
                 "create_time": 5.5}, "pid:1:5.50"),
    ("process", {"pid": 1, "exe": "C:\\Apps\\Telegram.exe"}, "pid:1:0.00"),
    ("process", {"pid": 1}, None),
    ("process", {"pid": "not a number", "name": "x"}, None),
    ("installed", {"source": "snap", "id": "telegram-desktop", "path": None},
     "snap:telegram-desktop:"),
    ("installed", {"source": "app_bundle", "bundle_id": "org.telegram.desktop"},
     "app_bundle:org.telegram.desktop:"),
    ("installed", {"source": "floppy", "id": "x"}, None),
    ("network", {"remote_address": "[2001:67c:4e8::1]:443", "local_address": "[::1]:5000",
                 "protocol": "tcp", "pid": 9}, "conn:tcp:::1:5000->2001:67c:4e8::1:443:9"),
    ("network", {"remote_ip": "149.154.167.51", "remote_port": 443, "protocol": "udp"},
     "conn:udp::0->149.154.167.51:443:None"),
    ("network", {"pid": 3}, None),
    ("keyboard", {"pid": 3}, None),
])
def test_observations_are_rebuilt_from_evidence(sensor: str, evidence: dict[str, Any],
                                                expected: str | None) -> None:
    observation = impact.observation_from_evidence(sensor, evidence)
    assert (observation.identity if observation else None) == expected


@pytest.mark.parametrize(("sensor", "evidence"), [
    ("process", {"pid": 7, "name": "notes", "exe": "/home/a/notes",
                 "content_signatures": ["telegram/tdesktop-theme-format"]}),
    ("installed", {"source": "file", "id": "/home/a/Downloads/notes",
                   "content_signatures": ["telegram/tdesktop-theme-format"]}),
])
def test_a_content_finding_is_re_judged_from_its_evidence(
        sensor: str, evidence: dict[str, Any]) -> None:
    """The impact preview re-evaluates a renamed copy by the signatures the agent matched."""
    observation = impact.observation_from_evidence(sensor, evidence)
    assert observation is not None
    catalog = load_catalog()
    policy = load_policy(default_policy_path(), catalog)
    [finding] = Engine(compile_bundle(policy, catalog)).evaluate(observation)
    assert (finding.app, finding.matched) == ("telegram",
                                              "content: telegram/tdesktop-theme-format")


# -- recommendations --------------------------------------------------------------


def test_recommendations_for_telegram_name_signal(
    client: TestClient, api_token: Callable[..., str]
) -> None:
    viewer = api_token("viewer")
    response = client.get(f"{API}/recommendations/telegram", headers=bearer(viewer))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["app"], body["verdict"]) == ("telegram", "deny")
    first = body["alternatives"][0]
    assert (first["id"], first["name"]) == ("signal", "Signal")
    assert first["download_url"] == "https://signal.org/download/"
    # Desktops, and phones (issue 15): Signal's store pages.
    assert set(first["install_hints"]) == {"linux", "macos", "windows", "ios", "android"}
    assert all(first["install_hints"].values())
    assert "apps.apple.com" in first["install_hints"]["ios"]
    assert "play.google.com" in first["install_hints"]["android"]
    assert_error(client.get(f"{API}/recommendations/icq", headers=bearer(viewer)), 404,
                 "unknown_app")
