"""`warden` admin commands against a real local HTTP server that serves canned answers."""

from __future__ import annotations

import argparse
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from policies.loader import default_policy_path
from server.cli import admin_commands, policy_commands

TOKEN = "test-admin-token"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeApi:
    """Answers (method, path) with a canned (status, body, content type); records requests."""

    url: str = ""
    routes: dict[tuple[str, str], list[tuple[int, Any, str]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def on(self, method: str, path: str, body: Any, status: int = 200,
           content_type: str = "application/json") -> None:
        """Queue an answer; the last one queued for a route repeats."""
        self.routes.setdefault((method, path), []).append((status, body, content_type))

    def answer(self, method: str, path: str) -> tuple[int, Any, str]:
        queued = self.routes.get((method, path))
        if not queued:
            return 404, {"error": {"code": "not_found", "message": f"no route {path}",
                                   "details": []}}, "application/json"
        return queued.pop(0) if len(queued) > 1 else queued[0]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            fake.requests.append(Recorded(self.command, parts.path, parse_qs(parts.query),
                                          dict(self.headers), self.rfile.read(length)))
            status, body, content_type = fake.answer(self.command, parts.path)
            data = body if isinstance(body, bytes) else (
                body.encode() if isinstance(body, str) else json.dumps(body).encode())
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(10)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WARDEN_URL", "WARDEN_TOKEN", "WARDEN_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def build_parser() -> argparse.ArgumentParser:
    # The same wiring as `warden` itself (server/cli/__init__.py), minus server_commands.
    parser = argparse.ArgumentParser(prog="warden")
    subparsers = parser.add_subparsers(dest="area", required=True)
    policy_commands.register(subparsers)
    admin_commands.register(subparsers)
    return parser


def warden(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(list(argv))
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def connected(api: FakeApi, *argv: str) -> list[str]:
    return [*argv, "--url", api.url, "--token", TOKEN]


# Whole answers, as the server sends them: the CLI parses them into the API's own models.
FINDING = {"id": 1, "agent_id": "a-1", "host": "pc-7", "group": "ops", "app": "telegram",
           "sensor": "process", "key": "pid:1:0.00", "verdict": "deny", "action": "notify",
           "status": "open", "triage": "new", "triage_comment": None, "triage_by": None,
           "triage_at": None, "evidence": {"pid": 1}, "alternative": "signal",
           "confidence": None, "message": "", "matched": "",
           "first_seen": "2025-01-02T03:04:05.123456+00:00",
           "last_seen": "2025-01-02T03:04:05.123456+00:00", "resolved_at": None, "count": 2}
POLICY = {"version_number": 2, "version": "ab" * 32, "name": "default", "mode": "audit",
          "created_at": "2025-01-02T00:00:00+00:00", "created_by": "admin", "active": False}
AGENT = {"id": "7", "hostname": "pc-7", "machine_id": "m-7", "os": "linux", "os_version": "12",
         "arch": "x86_64", "agent_version": "0.1", "user": "alice", "group": "ops",
         "enrolled_at": "2025-01-01T00:00:00+00:00", "last_seen": "2025-01-02T03:04:05Z",
         "policy_version": "abcdef0123456789", "status": None, "revoked_at": None,
         "state": "silent", "open_findings": 1, "policy_version_number": 2,
         "policy_current": True, "public_key": None, "reenrollment": None}
SECRET = {"id": 3, "group": None, "note": None, "created_by": "admin",
          "created_at": "2025-01-01T00:00:00+00:00", "revoked_at": None, "uses": 5}
API_TOKEN = {"id": 4, "name": "ci", "role": "viewer", "user_id": None,
             "created_at": "2025-01-01T00:00:00+00:00", "revoked_at": None, "last_used": None}


def page(*items: dict[str, Any], next_cursor: str | None = None) -> dict[str, Any]:
    return {"items": list(items), "next_cursor": next_cursor}


# --- policies -----------------------------------------------------------------------


def test_policy_push_validates_then_uploads(api: FakeApi,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    api.on("POST", "/api/v1/policies", POLICY, status=201)
    path = default_policy_path()
    code, out, err = warden(capsys, *connected(api, "policy", "push", str(path)))
    assert (code, err) == (0, "")
    assert out == (f"pushed {path} as policy version 2\n"
                   "activate it with: warden policy activate 2\n")
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/api/v1/policies")
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Content-Type"] == "application/yaml"
    assert request.body == path.read_bytes()


def test_policy_push_refuses_an_invalid_file_locally(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - app: telegram\n    verdict: forbid\n"
                   "  - app: icq\n    verdict: deny\n")
    code, out, err = warden(capsys, *connected(api, "policy", "push", str(bad)))
    assert (code, out) == (1, "")
    assert api.requests == []
    _, _, validate_err = warden(capsys, "policy", "validate", str(bad))
    issues = [line for line in validate_err.splitlines() if line.startswith(f"error: {bad}")]
    assert issues and all(line in err.splitlines() for line in issues)
    assert f"error: {bad}:4: rules[0].verdict:" in err
    assert err.splitlines()[-1] == f"error: {bad} is invalid; nothing was pushed"


def test_policy_push_shows_the_servers_validation_issues(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("POST", "/api/v1/policies", {"error": {
        "code": "invalid_policy", "message": "the policy is invalid",
        "details": [{"file": "policy", "line": 9, "field": "rules[0].app",
                     "message": "unknown app id 'x'", "hint": "use a catalog id"}]}},
        status=422)
    code, out, err = warden(capsys, *connected(api, "policy", "push",
                                                 str(default_policy_path())))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "error: the policy is invalid (HTTP 422)",
        "error: policy:9: rules[0].app: unknown app id 'x' (use a catalog id)",
    ]


def test_policy_list_diff_activate_rollback_impact(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "/api/v1/policies", page(
        {**POLICY, "version_number": 1, "version": "0123456789abcdef",
         "created_at": "2025-01-01T00:00:00+00:00"},
        {**POLICY, "version": "fedcba9876543210", "mode": "enforce", "active": True}))
    code, out, _ = warden(capsys, *connected(api, "policy", "list"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["VERSION", "NAME", "MODE", "ACTIVE", "CREATED", "BY", "HASH"]
    assert lines[2].split() == ["2", "default", "enforce", "*", "2025-01-02", "00:00:00Z",
                                "admin", "fedcba987654"]

    api.on("GET", "/api/v1/policies/diff",
           {"from": 1, "to": 2, "diff": "--- 1\n+++ 2\n-mode: audit\n+mode: enforce\n"})
    code, out, _ = warden(capsys, *connected(api, "policy", "diff", "1", "2", "--unified"))
    assert (code, out) == (0, "--- 1\n+++ 2\n-mode: audit\n+mode: enforce\n")
    assert api.requests[-1].query == {"from": ["1"], "to": ["2"]}

    api.on("POST", "/api/v1/policies/2/activate", {**POLICY, "active": True})
    assert warden(capsys, *connected(api, "policy", "activate", "2"))[1] == (
        "policy version 2 is now active\n")
    api.on("POST", "/api/v1/policies/rollback", {**POLICY, "version_number": 1, "active": True})
    assert warden(capsys, *connected(api, "policy", "rollback"))[1] == (
        "rolled back: policy version 1 is active again\n")

    totals = dict.fromkeys(("agents_evaluated", "agents_affected", "findings_evaluated",
                            "unevaluable", "changes", "newly_denied", "no_longer_denied"), 1)
    api.on("GET", "/api/v1/policies/2/impact", {
        "version_number": 2, "active_version_number": 1, "version": "ab" * 32,
        "compared_with": "cd" * 32, "totals": totals, "truncated": False, "changes": [
            {"agent_id": "a-1", "hostname": "pc-7", "group": None, "finding_id": None,
             "app": "whatsapp", "sensor": "process", "before": "allow", "after": "deny"}]})
    code, out, _ = warden(capsys, *connected(api, "policy", "impact", "2"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Impact of activating v2 (compared with v1)"
    # A table, like the dashboard's: no Python-style values.
    table_at = next(index for index, line in enumerate(lines) if line.startswith("HOST "))
    assert lines[table_at].split() == ["HOST", "GROUP", "APP", "SENSOR", "NOW", "AFTER",
                                       "AGENT", "DOES", "NOW", "WOULD", "DO", "FINDING"]
    assert lines[table_at + 1].split() == ["pc-7", "-", "whatsapp", "process", "allow",
                                           "deny", "-", "-", "-"]
    assert "None" not in out and "{" not in out
    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", "/api/v1/policies"), ("GET", "/api/v1/policies/diff"),
        ("POST", "/api/v1/policies/2/activate"), ("POST", "/api/v1/policies/rollback"),
        ("GET", "/api/v1/policies/2/impact")]


# --- findings -----------------------------------------------------------------------


def test_findings_list_filters_and_follows_cursors(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "/api/v1/findings", page(FINDING, next_cursor="page2"))
    api.on("GET", "/api/v1/findings", page({**FINDING, "id": 2, "host": "pc-8"}))
    code, out, err = warden(capsys, *connected(
        api, "findings", "list", "--app", "telegram", "--status", "open", "--host", "pc-7",
        "--since", "2025-01-01"))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "APP", "HOST", "SENSOR", "VERDICT", "OUTCOME", "STATUS",
                                "TRIAGE", "LAST", "SEEN", "COUNT"]
    # An answer without outcomes (an older server) shows none, not a guess.
    assert lines[1].split() == ["1", "telegram", "pc-7", "process", "deny", "-", "open", "new",
                                "2025-01-02", "03:04:05Z", "2"]
    assert lines[2].split()[:3] == ["2", "telegram", "pc-8"]
    first, second = api.requests
    assert first.query == {"app": ["telegram"], "status": ["open"], "host": ["pc-7"],
                           "since": ["2025-01-01"], "limit": ["500"]}
    assert second.query == {**first.query, "cursor": ["page2"]}
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)


def test_findings_list_limit_and_json(api: FakeApi,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/api/v1/findings", page(FINDING, {**FINDING, "id": 2}, next_cursor="more"))
    code, out, _ = warden(capsys, *connected(api, "findings", "list", "--limit", "2", "--json"))
    assert code == 0
    assert json.loads(out) == {"items": [FINDING, {**FINDING, "id": 2}]}
    # Two wanted, two on the first page: the next page is never asked for.
    [request] = api.requests
    assert request.query == {"limit": ["2"]}


@pytest.mark.parametrize(("action", "state"), [("ack", "acknowledged"), ("resolve", "resolved")])
def test_findings_triage(api: FakeApi, capsys: pytest.CaptureFixture[str], action: str,
                         state: str) -> None:
    api.on("POST", "/api/v1/findings/7/triage", {**FINDING, "triage": state})
    code, out, _ = warden(capsys, *connected(api, "findings", action, "7", "--comment",
                                             "talked to the user"))
    assert (code, out) == (0, f"finding 7: {state}\n")
    [request] = api.requests
    assert (request.method, request.path) == ("POST", "/api/v1/findings/7/triage")
    assert request.json() == {"state": state, "comment": "talked to the user"}


def test_findings_export_to_a_file(api: FakeApi, capsys: pytest.CaptureFixture[str],
                                   tmp_path: Path) -> None:
    csv = "id,app,host\nf-1,telegram,pc-7\n"
    api.on("GET", "/api/v1/findings/export", csv, content_type="text/csv")
    target = tmp_path / "findings.csv"
    code, out, _ = warden(capsys, *connected(api, "findings", "export", "--format", "csv",
                                             "--app", "telegram", "-o", str(target)))
    assert code == 0
    assert target.read_text() == csv
    assert out == f"exported findings to {target} ({len(csv)} bytes, csv)\n"
    assert api.requests[0].query == {"format": ["csv"], "app": ["telegram"]}
    assert [p.name for p in tmp_path.iterdir()] == ["findings.csv"]


def test_findings_export_to_stdout(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/api/v1/findings/export", json.dumps([FINDING]))
    code, out, _ = warden(capsys, *connected(api, "findings", "export", "--format", "json"))
    assert code == 0
    assert json.loads(out) == [FINDING]


def test_a_failed_export_leaves_no_file(api: FakeApi, capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    api.on("GET", "/api/v1/findings/export", {"error": {
        "code": "bad_filter", "message": "since: not a date", "details": []}}, status=422)
    target = tmp_path / "out.json"
    code, _, err = warden(capsys, *connected(api, "findings", "export", "--format", "json",
                                             "--since", "yesterday", "-o", str(target)))
    assert (code, err) == (1, "error: since: not a date (HTTP 422)\n")
    assert list(tmp_path.iterdir()) == []


# --- agents, secrets, tokens, audit -------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "method", "path", "answer", "body", "expected"),
    [
        (["secrets", "create", "--group", "ops"], "POST", "/api/v1/secrets",
         {**SECRET, "group": "ops", "uses": 0, "secret": "s3cr3t"}, {"group": "ops"},
         "id: 3\ngroup: ops\nnote: -\ncreated_by: admin\ncreated_at: "
         "2025-01-01T00:00:00+00:00\nrevoked_at: -\nuses: 0\nsecret: s3cr3t\n"),
        (["secrets", "revoke", "3"], "POST", "/api/v1/secrets/3/revoke", SECRET, b"",
         "enrollment secret 3 revoked\n"),
        (["tokens", "create", "--name", "ci", "--role", "viewer"], "POST", "/api/v1/tokens",
         {**API_TOKEN, "token": "t0k"}, {"name": "ci", "role": "viewer"},
         "id: 4\nname: ci\nrole: viewer\nuser_id: -\ncreated_at: 2025-01-01T00:00:00+00:00\n"
         "revoked_at: -\nlast_used: -\ntoken: t0k\n"),
        (["tokens", "revoke", "4"], "POST", "/api/v1/tokens/4/revoke", API_TOKEN, b"",
         "API token 4 revoked\n"),
    ],
)
def test_mutating_commands(api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str],
                           method: str, path: str, answer: dict[str, Any], body: Any,
                           expected: str) -> None:
    api.on(method, path, answer)
    code, out, _ = warden(capsys, *connected(api, *argv))
    assert (code, out) == (0, expected)
    [request] = api.requests
    assert (request.method, request.path) == (method, path)
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert (request.json() if request.body else request.body) == body


@pytest.mark.parametrize(
    ("argv", "path", "item", "row"),
    [
        (["agents", "list"], "/api/v1/agents", AGENT,
         ["7", "pc-7", "linux", "12", "0.1", "ops", "silent", "2025-01-02", "03:04:05Z",
          "v2", "(current)", "1"]),
        (["secrets", "list"], "/api/v1/secrets", SECRET,
         ["3", "-", "5", "2025-01-01", "00:00:00Z", "-"]),
        (["tokens", "list"], "/api/v1/tokens",
         {**API_TOKEN, "revoked_at": "2025-02-01T00:00:00+00:00"},
         ["4", "ci", "viewer", "-", "2025-01-01", "00:00:00Z", "2025-02-01", "00:00:00Z"]),
        (["audit"], "/api/v1/audit",
         {"id": 9, "time": "2025-01-01T00:00:00+00:00", "actor": "token:1",
          "action": "policy.activate",
          "target": "policy:2", "before": None, "after": {"active": 2}},
         ["2025-01-01", "00:00:00Z", "token:1", "policy.activate", "policy:2"]),
    ],
)
def test_listing_commands(api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str],
                          path: str, item: dict[str, Any], row: list[str]) -> None:
    api.on("GET", path, page(item))
    code, out, _ = warden(capsys, *connected(api, *argv))
    assert code == 0
    assert out.splitlines()[1].split() == row
    code, out, _ = warden(capsys, *connected(api, *argv, "--json"))
    assert (code, json.loads(out)) == (0, {"items": [item]})
    assert [(r.method, r.path) for r in api.requests] == [("GET", path)] * 2


def test_an_empty_list_says_so(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/api/v1/agents", page())
    assert warden(capsys, *connected(api, "agents", "list")) == (0, "", "no agents enrolled\n")


# --- errors, connection and credentials ---------------------------------------------


def test_an_api_error_is_one_clean_line(api: FakeApi,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    api.on("POST", "/api/v1/policies/9/activate", {"error": {
        "code": "not_found", "message": "policy version 9 does not exist", "details": []}},
        status=404)
    code, out, err = warden(capsys, *connected(api, "policy", "activate", "9"))
    assert (code, out, err) == (1, "", "error: policy version 9 does not exist (HTTP 404)\n")


def test_a_refused_token_names_where_tokens_come_from(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.on("GET", "/api/v1/agents", {"error": {"code": "unauthorized",
                                               "message": "invalid token", "details": []}},
           status=401)
    code, _, err = warden(capsys, *connected(api, "agents", "list"))
    assert code == 1
    assert err.startswith("error: invalid token (HTTP 401): check the token: --token, "
                          "WARDEN_TOKEN or ")
    assert err.count("\n") == 1


def test_a_non_json_error_still_reads_well(api: FakeApi,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    api.on("GET", "/api/v1/agents", "<html>Bad Gateway</html>", status=502,
           content_type="text/html")
    code, _, err = warden(capsys, *connected(api, "agents", "list"))
    assert code == 1
    assert err == f"error: Bad Gateway from {api.url}/api/v1/agents (HTTP 502)\n"


def test_a_refused_connection_says_what_to_check(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    code, out, err = warden(capsys, "agents", "list", "--url", url, "--token", TOKEN)
    assert (code, out) == (1, "")
    assert err == (f"error: cannot reach the Warden server at {url} (connection refused). "
                   "Is it running (`warden server run`)? If it listens elsewhere, pass --url "
                   "or set WARDEN_URL\n")


def test_no_token_is_a_usage_error(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = warden(capsys, "agents", "list", "--url", api.url)
    assert code == 2
    assert err.startswith("error: no API token: pass --token, set WARDEN_TOKEN")
    assert api.requests == []


def test_credentials_from_the_config_file_then_env_then_flags(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    api.on("GET", "/api/v1/agents", page())
    config = tmp_path / "config" / "warden" / "cli.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"url": api.url, "token": "from-file"}))
    assert warden(capsys, "agents", "list")[0] == 0
    monkeypatch.setenv("WARDEN_TOKEN", "from-env")
    assert warden(capsys, "agents", "list")[0] == 0
    assert warden(capsys, "agents", "list", "--token", "from-flag")[0] == 0
    assert [r.headers["Authorization"] for r in api.requests] == [
        "Bearer from-file", "Bearer from-env", "Bearer from-flag"]


def test_a_broken_config_file_is_reported(capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    config = tmp_path / "config" / "warden" / "cli.json"
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    code, _, err = warden(capsys, "agents", "list")
    assert code == 2
    assert err.startswith(f"error: {config} is not valid JSON")


def test_url_from_the_environment(api: FakeApi, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    api.on("GET", "/api/v1/audit", page())
    monkeypatch.setenv("WARDEN_URL", api.url + "/")
    monkeypatch.setenv("WARDEN_TOKEN", TOKEN)
    assert warden(capsys, "audit")[0] == 0
    assert api.requests[0].path == "/api/v1/audit"


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["findings", "list", "--status", "closed"], ["findings", "list", "--limit", "0"],
                 ["tokens", "create", "--name", "x", "--role", "root"], ["policy", "diff", "1"]):
        with pytest.raises(SystemExit) as caught:
            build_parser().parse_args(argv)
        assert caught.value.code == 2
    assert "usage: warden" in capsys.readouterr().err


def test_ids_cannot_escape_their_path_segment(api: FakeApi,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    api.on("POST", "/api/v1/secrets/..%2Ftokens/revoke", SECRET)
    assert warden(capsys, *connected(api, "secrets", "revoke", "../tokens"))[0] == 0
    assert api.requests[0].path == "/api/v1/secrets/..%2Ftokens/revoke"
    api.on("GET", "/api/v1/agents/..%2Fsecrets", AGENT)
    api.on("POST", "/api/v1/agents/7/revoke", AGENT)
    assert warden(capsys, *connected(api, "agents", "revoke", "../secrets"))[0] == 0
    assert api.requests[1].path == "/api/v1/agents/..%2Fsecrets"


@pytest.mark.parametrize(("action", "said"), [
    ("revoke", "agent pc-7 (7) revoked: its token no longer works\n"),
    ("readmit", "agent pc-7 (7) re-admitted: the machine can enroll again and gets a new "
                "token\n")])
def test_agents_are_named_by_id(api: FakeApi, capsys: pytest.CaptureFixture[str], action: str,
                                said: str) -> None:
    api.on("GET", "/api/v1/agents/7", AGENT)
    api.on("POST", f"/api/v1/agents/7/{action}", AGENT)
    assert warden(capsys, *connected(api, "agents", action, "7"))[:2] == (0, said)
    assert [(r.method, r.path) for r in api.requests] == [
        ("GET", "/api/v1/agents/7"), ("POST", f"/api/v1/agents/7/{action}")]


def test_an_answer_outside_the_documented_shape_is_a_clear_error(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # The CLI reads answers into the API's response models: a server that answers something
    # else (another version, a proxy's page) is named, not half-printed.
    api.on("GET", "/api/v1/agents", page({"id": "7", "hostname": "pc-7"}))
    code, out, err = warden(capsys, *connected(api, "agents", "list"))
    assert (code, out) == (1, "")
    assert err.startswith("error: the server's answer to GET /api/v1/agents is not what the "
                          "API documents (items.0.machine_id: Field required")
