"""The exports write, byte for byte, what the API shape of each row gives written the plain way.

The exports stream plain rows and write them a column at a time
(server.store.export_rows, server.export_format). Here rows with anything a
database may hold — controls, bidi overrides, spreadsheet formulas, non-ASCII
text, negative counts, evidence and outcomes of any JSON shape, reviewers'
actor strings — are written straight into the database (bypassing ingest), and
every export must equal the reference: `findings.as_dict` / `violations.as_dict`
of the ORM rows, newest id first, each CSV cell through `csv_cell` and each JSON
row through `json.dumps(…, ensure_ascii=False)`. The columns are the documented
ones: the API models' fields, in their order. Real app and database (SQLite;
PostgreSQL with WARDEN_TEST_DATABASE_URL), derandomised.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from server import export_format
from server.db import utcnow
from server.exports import CSV_COLUMNS, VIOLATION_COLUMNS
from server.models import Agent, Finding, Violation
from server.schemas.findings import Finding as FindingModel
from server.schemas.violations import Violation as ViolationModel
from server.store import export_rows, findings, findings_query, violations, violations_query
from server.store.findings_query import FindingFilters
from server.store.violations_query import ViolationFilters
from server.untrusted_text import csv_cell
from tests.server.test_dashboard_any_evidence import FUZZ, json_values, text

DB = sessionmaker[Session]
API = "/api/v1"

# Text that trips each of the CSV writer's and the JSON encoder's special cases.
tricky = st.sampled_from(["=SUM(A1)", "+1", "-rf", "@cmd", "\tx", "a\nb", "a,b", 'say "hi"',
                          "\u202eevil", "caf\u00e9", "\x1b[31m", "\x85", "\u2028", "100%s",
                          ""]) | text(14)
actors = st.none() | st.sampled_from(["user:1:alice", "token:3:ci", "cli:root", "system",
                                      "user:x:odd"]) | text(16)
times = st.none() | st.datetimes(min_value=dt.datetime(2020, 1, 1),
                                 max_value=dt.datetime(2030, 1, 1)).map(
    lambda moment: moment.replace(tzinfo=dt.UTC))


def reference_csv(items: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for item in items:
        writer.writerow([csv_cell(name, item.get(name)) for name in columns])
    return buffer.getvalue()


def reference_json(items: list[dict[str, Any]]) -> str:
    return '{"items":[' + ",".join(json.dumps(item, ensure_ascii=False)
                                   for item in items) + "]}"


def reference_items(session: Session) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    owners = {agent.id: agent for agent in session.scalars(sa.select(Agent))}
    found = [findings.as_dict(row, owners[row.agent_id]) for row in session.scalars(
        sa.select(Finding).order_by(Finding.id.desc()))]
    gathered = [violations.as_dict(row, owners[row.agent_id]) for row in session.scalars(
        sa.select(Violation).order_by(Violation.id.desc()))]
    return found, gathered


def add_rows(session: Session, draw: Any) -> None:
    now = utcnow()
    agent = Agent(id=str(uuid.uuid4()), hostname=draw(tricky), machine_id=str(uuid.uuid4()),
                  os="linux", os_version="12", arch="x86_64", agent_version="0.1.0",
                  user="u", group=draw(st.none() | tricky), token_hash=uuid.uuid4().hex)
    session.add(agent)
    session.flush()
    for _ in range(draw(st.integers(1, 3))):
        session.add(Finding(
            agent_id=agent.id, key=str(uuid.uuid4()), app=draw(tricky), sensor=draw(tricky),
            verdict=draw(tricky), action=draw(st.sampled_from(["report", "notify"]) | tricky),
            status=draw(tricky), first_seen=now, last_seen=draw(times) or now,
            resolved_at=draw(times), count=draw(st.integers(-(2**31), 2**31 - 1)),
            evidence=draw(json_values), alternative=draw(st.none() | tricky),
            confidence=draw(st.none() | tricky), message=draw(tricky), matched=draw(tricky),
            triage=draw(tricky), triage_comment=draw(st.none() | tricky),
            triage_by=draw(actors), triage_at=draw(times), outcomes=draw(json_values)))
    session.add(Violation(
        agent_id=agent.id, app=draw(tricky), status=draw(tricky), first_seen=now,
        last_seen=now, opened_at=now, resolved_at=draw(times),
        findings=draw(st.integers(0, 10**6)), open_findings=draw(st.integers(-5, 5)),
        sensor_counts=draw(st.dictionaries(tricky, st.integers(0, 10**6), max_size=3)),
        triage=draw(tricky), triage_comment=draw(st.none() | tricky), triage_by=draw(actors),
        triage_at=draw(times)))


@FUZZ
@given(data=st.data())
def test_every_export_equals_the_api_shape_written_plainly(
    client: TestClient, admin_token: str, db: DB, data: st.DataObject
) -> None:
    with db() as session:
        session.execute(sa.delete(Violation))
        session.execute(sa.delete(Finding))
        for _ in range(data.draw(st.integers(1, 3))):
            add_rows(session, data.draw)
        session.commit()
    with db() as session:
        found, gathered = reference_items(session)
    admin = {"Authorization": f"Bearer {admin_token}"}

    def export(what: str, format: str) -> str:
        answer = client.get(f"{API}/{what}/export", params={"format": format}, headers=admin)
        assert answer.status_code == 200, answer.text
        return answer.content.decode()

    assert export("findings", "csv") == reference_csv(found, CSV_COLUMNS)
    assert export("findings", "json") == reference_json(found)
    assert export("violations", "csv") == reference_csv(gathered, VIOLATION_COLUMNS)
    assert export("violations", "json") == reference_json(gathered)


@pytest.mark.parametrize("number", [9.225670565932562e+18, 1.4413314533428317e+17, 0.1, -7, 2**62])
def test_a_bare_number_in_a_json_column_keeps_every_digit(
    client: TestClient, admin_token: str, db: DB, number: float
) -> None:
    # SQLite gives a column declared JSON numeric affinity: a bare number is stored as a
    # REAL or an INTEGER (PostgreSQL keeps it as numeric), and SQL's CAST to text prints a
    # REAL with 15 digits only: the export must still write what the API gives.
    with db() as session:
        agent = Agent(id=str(uuid.uuid4()), hostname="h", machine_id="m", os="linux",
                      os_version="12", arch="x86_64", agent_version="0.1", user="u",
                      token_hash=uuid.uuid4().hex)
        session.add(agent)
        session.flush()
        session.add(Finding(agent_id=agent.id, key="k", app="telegram", sensor="process",
                            verdict="deny", action="notify", status="open",
                            first_seen=utcnow(), last_seen=utcnow(), count=1,
                            evidence=number, outcomes=number, message="m", matched=""))
        session.add(Violation(agent_id=agent.id, app="telegram", status="open",
                              first_seen=utcnow(), last_seen=utcnow(), opened_at=utcnow(),
                              findings=1, open_findings=1, sensor_counts={"process": 1}))
        session.commit()
        found, _ = reference_items(session)
    admin = {"Authorization": f"Bearer {admin_token}"}
    for format, reference in (("csv", reference_csv(found, CSV_COLUMNS)),
                              ("json", reference_json(found))):
        answer = client.get(f"{API}/findings/export", params={"format": format}, headers=admin)
        assert answer.status_code == 200, answer.text
        assert answer.content.decode() == reference


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_chunks_of_any_size_write_the_same_text(
    client: TestClient, db: DB, batch_size: int
) -> None:
    # One chunk with a control character, a formula or a null in a column and the next
    # without: each column's fast path is chosen per chunk, the text must not change.
    with db() as session:
        for hostname in ("plain", "=formula", "bell\x07", "caf\u00e9", "plain-2"):
            agent = Agent(id=str(uuid.uuid4()), hostname=hostname, machine_id=hostname,
                          os="linux", os_version="12", arch="x86_64", agent_version="0.1",
                          user="u", group=None if "-" in hostname else "g",
                          token_hash=uuid.uuid4().hex)
            session.add(agent)
            session.flush()
            session.add(Finding(agent_id=agent.id, key=hostname, app="telegram",
                                sensor="process", verdict="deny", action="notify",
                                status="open", first_seen=utcnow(), last_seen=utcnow(),
                                count=1 if hostname != "plain" else -1,
                                evidence={"name": hostname}, message=hostname, matched=""))
        session.commit()
        found, _ = reference_items(session)
        where = findings_query.conditions(FindingFilters())
        chunks = list(export_rows.finding_chunks(session, where, batch_size))
        assert len(chunks) == -(-len(found) // batch_size)
        written = export_format.csv_header(CSV_COLUMNS) + "".join(
            export_format.csv_rows(chunk, CSV_COLUMNS) for chunk in chunks)
        assert written == reference_csv(found, CSV_COLUMNS)
        assert '{"items":[' + ",".join(map(export_format.json_rows, chunks)) + "]}" == \
            reference_json(found)
        assert list(export_rows.as_dicts(iter(chunks))) == found


def test_the_columns_are_the_documented_ones(
    client: TestClient, admin_token: str, enrolled_agent: Any, db: DB
) -> None:
    with db() as session:
        session.add(Finding(agent_id=enrolled_agent.agent_id, key="k", app="telegram",
                            sensor="process", verdict="deny", action="notify", status="open",
                            first_seen=utcnow(), last_seen=utcnow(), count=1, evidence={},
                            message="", matched=""))
        session.add(Violation(agent_id=enrolled_agent.agent_id, app="telegram", status="open",
                              first_seen=utcnow(), last_seen=utcnow(), opened_at=utcnow(),
                              findings=1, open_findings=1, sensor_counts={"process": 1},
                              triage="new"))
        session.commit()
    admin = {"Authorization": f"Bearer {admin_token}"}
    for what, model in (("findings", FindingModel), ("violations", ViolationModel)):
        documented = list(model.model_fields)
        header = client.get(f"{API}/{what}/export?format=csv", headers=admin).text
        assert next(csv.reader(io.StringIO(header))) == documented
        [item] = client.get(f"{API}/{what}/export?format=json", headers=admin).json()["items"]
        assert list(item) == documented
    with db() as session:
        where = violations_query.conditions(ViolationFilters(), paging=False)
        assert list(export_rows.as_dicts(export_rows.violation_chunks(session, where))) == (
            reference_items(session)[1])


# The export's own marker between JSON cells (server.export_format), as a value.
MARK = "\x00warden:export:cell\x00"


def test_stored_forms_of_times_and_json_write_the_same_text(
    client: TestClient, admin_token: str, db: DB
) -> None:
    # Times and JSON are rewritten as text without being parsed when they are in the form
    # the server stores; anything else (a value holding the JSON cells' marker, times
    # written by hand on SQLite) must come out as the plain way writes it too.
    moment = dt.datetime(2026, 12, 3, 20, 6, 19, tzinfo=dt.UTC)
    with db() as session:
        sqlite = session.get_bind().dialect.name == "sqlite"
    # JSONB refuses NUL: there the marker cannot be stored, its text without NUL can.
    mark = MARK if sqlite else MARK.strip("\x00")
    evidence: list[Any] = [
        {"name": "caf\u00e9 \u202e", "pid": 1, "ratio": 0.1, "big": 1e300,
         "z": {"b": [], "a": None}},
        [1, mark, 2], [mark, mark], {mark: mark}, mark, "\\u00e9", [], {}, -0.0, 10**30,
    ]
    with db() as session:
        agent = Agent(id=str(uuid.uuid4()), hostname="h\u00e9", machine_id="m", os="linux",
                      os_version="12", arch="x86_64", agent_version="0.1", user="u",
                      group=None, token_hash=uuid.uuid4().hex)
        session.add(agent)
        session.flush()
        for number, value in enumerate(evidence):
            session.add(Finding(
                agent_id=agent.id, key=f"k{number}", app="telegram", sensor="process",
                verdict="deny", action="notify", status="open",
                first_seen=moment + dt.timedelta(microseconds=number % 3),
                last_seen=moment + dt.timedelta(seconds=number,
                                                microseconds=999_999 * (number % 2)),
                resolved_at=None if number % 2 else moment, count=number, evidence=value,
                message="", matched="", triage_at=moment if number == 3 else None,
                outcomes={"notify": {"state": "failed", "detail": mark, "time": "t"}}
                if number % 3 == 0 else None))
        session.commit()
        if sqlite:
            for key, stored in (("k0", "2026-01-02 03:04:05"), ("k1", "2026-01-02T03:04:05.5"),
                                ("k2", "2026-01-02 03:04:05+02:00")):
                session.execute(sa.text("UPDATE findings SET resolved_at = :stored "
                                        "WHERE key = :key"), {"stored": stored, "key": key})
            session.commit()
        found, _ = reference_items(session)
    admin = {"Authorization": f"Bearer {admin_token}"}
    for batch in ("csv", "json"):
        answer = client.get(f"{API}/findings/export", params={"format": batch}, headers=admin)
        assert answer.status_code == 200, answer.text
        written = answer.content.decode()
        assert written == (reference_csv(found, CSV_COLUMNS) if batch == "csv"
                           else reference_json(found))
