"""Every page renders whatever the database holds: a property test.

Ingest checks evidence now (policies.evidence), but rows from before it, or
written by someone with database access, may hold anything: a number for a
path, a list for the evidence, an action event whose result is a string.
Hypothesis writes such a finding and its event straight into the database
(bypassing ingest) and every page and export that shows findings must answer
200 — never a 500. Real app, real database (SQLite; PostgreSQL with
WARDEN_TEST_DATABASE_URL), derandomised.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from policies.evidence import AnySensorEvidence
from server.db import utcnow
from server.models import Event, Finding
from tests.server.conftest import EnrolledAgent
from tests.server.dashboard_support import people

DB = sessionmaker[Session]
FUZZ = settings(max_examples=30, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# What any database can hold in text: no NUL (PostgreSQL refuses it), no lone surrogate.
characters = st.characters(exclude_categories=["Cs"], exclude_characters="\x00")


def text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(characters, max_size=max_size)


scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | text(40))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text(12), children, max_size=4),
    max_leaves=16)
# Mostly objects with the fields the pages look at, holding values of any type.
field_names = st.sampled_from(sorted(AnySensorEvidence.model_fields)) | text(12)
evidence_values = st.dictionaries(field_names, json_values, max_size=8) | json_values
payloads = (st.fixed_dictionaries({"result": json_values}, optional={"finding": json_values})
            | json_values)
sensors = st.sampled_from(["process", "installed", "network"]) | text(32)
short_words = st.sampled_from(["deny", "allow", "alert", "open", "resolved", "notify"]) \
    | text(16)

PAGES = ("/", "/findings", "/findings?status=open", "/findings/{id}", "/hosts/{agent}",
         "/findings/export.csv", "/findings/export.json", "/policies/1/impact")
API_PATHS = ("/api/v1/findings", "/api/v1/findings/{id}",
             "/api/v1/findings/export?format=csv", "/api/v1/findings/export?format=json",
             "/api/v1/stats")


@pytest.fixture
def viewer(app: FastAPI, client: TestClient, api_token: Callable[..., str]) -> TestClient:
    return people(app, api_token)("admin")


@FUZZ
@given(evidence=evidence_values, payload=payloads, sensor=sensors, verdict=short_words,
       action=short_words, status=st.sampled_from(["open", "resolved"]) | text(16),
       event_type=st.sampled_from(["finding_opened", "finding_resolved", "action", "other"]),
       app_id=text(64), words=text(200), confidence=st.none() | text(16),
       alternative=st.none() | text(64))
def test_every_page_renders_any_stored_finding(
    viewer: TestClient, client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent,
    db: DB, evidence: Any, payload: Any, sensor: str, verdict: str, action: str, status: str,
    event_type: str, app_id: str, words: str, confidence: str | None, alternative: str | None,
) -> None:
    now = utcnow()
    key = f"{app_id}|{sensor}|{uuid.uuid4()}"
    with db() as session:
        session.execute(sa.delete(Event))
        session.execute(sa.delete(Finding))
        row = Finding(agent_id=enrolled_agent.agent_id, key=key, app=app_id, sensor=sensor,
                      verdict=verdict, action=action, status=status, first_seen=now,
                      last_seen=now, count=1, evidence=evidence, alternative=alternative,
                      confidence=confidence, message=words, matched=words, triage="new")
        session.add(row)
        session.add(Event(id=str(uuid.uuid4()), agent_id=enrolled_agent.agent_id,
                          type=event_type, time=now, received_at=now, finding_key=key,
                          payload=payload))
        session.commit()
        finding_id = row.id
    admin = {"Authorization": f"Bearer {admin_token}"}
    answers = {path: viewer.get(path.format(id=finding_id, agent=enrolled_agent.agent_id))
               for path in PAGES}
    answers |= {path: client.get(path.format(id=finding_id), headers=admin)
                for path in API_PATHS}
    failed = {path: response.status_code for path, response in answers.items()
              if response.status_code != 200}
    assert not failed, failed
    # The finding is on its pages, not silently left out.
    assert f'href="/findings/{finding_id}"' in answers["/findings"].text
    if status in ("open", "resolved"):  # the host page lists those two
        assert f'href="/findings/{finding_id}"' in answers["/hosts/{agent}"].text
