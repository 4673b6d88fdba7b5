"""`warden violations list|show|triage|export`: the real CLI process against a real server.

Runs on SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pypdf import PdfReader

from tests.server.admin_support import TELEGRAM_DEB, bearer, event, process

WARDEN = Path(sys.executable).with_name("warden")
EnrolledAgent = Any


@pytest.fixture
def warden(live_server: str, admin_token: str,
           tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    if not WARDEN.exists():
        pytest.skip(f"the warden console script is not installed beside {sys.executable}")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("WARDEN_")}
    env.update(WARDEN_URL=live_server, WARDEN_TOKEN=admin_token,
               XDG_CONFIG_HOME=str(tmp_path / "config"))

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(WARDEN), *argv], env=env, capture_output=True, text=True,
                              timeout=60, check=False)

    return run


def test_review_violations_from_the_command_line(
    warden: Callable[..., subprocess.CompletedProcess[str]], live_server: str,
    enroll_secret: str, host_facts: Callable[..., dict[str, Any]], tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        for host in ("desk-1", "desk-2"):
            enrolled = http.post("/api/v1/agent/enroll", json=host_facts(hostname=host),
                                 headers=bearer(enroll_secret)).json()
            answer = http.post("/api/v1/agent/events", headers=bearer(enrolled["agent_token"]),
                               json={"events": [event(process(1)), event(process(2)),
                                                event(TELEGRAM_DEB)]})
            assert answer.status_code == 200, answer.text

    listed = warden("violations", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "APP", "HOST"] and len(lines) == 3
    assert "installed:1 process:2" in listed.stdout
    as_json = json.loads(warden("violations", "list", "--host", "desk-2", "--json").stdout)
    [one] = as_json["items"]
    assert one["host"] == "desk-2" and one["finding_count"] == 3

    shown = warden("violations", "show", str(one["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "host: desk-2" in shown.stdout and "findings:" in shown.stdout
    # Its evidence: the three findings, one line each.
    assert shown.stdout.count("telegram|process|") == 2
    assert shown.stdout.count("telegram|installed|") == 1

    triaged = warden("violations", "triage", str(one["id"]), "--state", "false_positive",
                     "--comment", "lab machine")
    assert triaged.returncode == 0, triaged.stderr
    assert "false_positive, with its 3 findings" in triaged.stdout
    detail = json.loads(warden("violations", "show", str(one["id"]), "--json").stdout)
    assert {finding["triage"] for finding in detail["findings"]} == {"false_positive"}

    out = tmp_path / "violations.csv"
    exported = warden("violations", "export", "--format", "csv", "--status", "open", "-o",
                      str(out))
    assert exported.returncode == 0, exported.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert sorted(row["host"] for row in rows) == ["desk-1", "desk-2"]

    missing = warden("violations", "show", "424242")
    assert missing.returncode == 1 and "violation 424242" in missing.stderr
    bad = warden("violations", "triage", str(one["id"]), "--state", "gone")
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_a_compliance_report_from_the_command_line(
    warden: Callable[..., subprocess.CompletedProcess[str]], live_server: str,
    enroll_secret: str, host_facts: Callable[..., dict[str, Any]], tmp_path: Path,
) -> None:
    with httpx.Client(base_url=live_server, timeout=30) as http:
        enrolled = http.post("/api/v1/agent/enroll", json=host_facts(hostname="desk-77"),
                             headers=bearer(enroll_secret)).json()
        http.post("/api/v1/agent/events", headers=bearer(enrolled["agent_token"]),
                  json={"events": [event(process(1))]}).raise_for_status()
    for format in ("pdf", "html", "csv"):
        out = tmp_path / f"report.{format}"
        done = warden("report", "compliance", "--format", format, "--out", str(out),
                      "--days", "7")
        assert done.returncode == 0, done.stderr
        assert f"to {out}" in done.stdout
    text = "\n".join(page.extract_text() for page in PdfReader(tmp_path / "report.pdf").pages)
    assert "0 of 1 machines compliant" in text and "desk-77" in text
    assert "desk-77" in (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "# open_violations" in (tmp_path / "report.csv").read_text(encoding="utf-8")
    bad = warden("report", "compliance", "--out", str(tmp_path / "x.pdf"), "--days", "0")
    assert bad.returncode == 2 and "from 1 to 366" in bad.stderr
    nowhere = warden("report", "compliance", "--out", str(tmp_path / "missing" / "x.pdf"))
    assert nowhere.returncode == 1 and "cannot write" in nowhere.stderr
