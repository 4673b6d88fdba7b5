"""`/api/v1/findings`: filters, keyset pages in every order, the timeline, triage and export.

Findings are made by posting real agent events (see admin_support). Runs on
SQLite and, with WARDEN_TEST_DATABASE_URL, on PostgreSQL.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from server.exports import CSV_COLUMNS
from server.store import audit, export_rows, findings_query
from server.store.findings_query import FindingFilters
from server.store.listing import CursorError, FilterError
from tests.server.admin_support import (
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
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def fleet(client: TestClient, enroll: Callable[..., EnrolledAgent],
          make_secret: Callable[..., str]) -> dict[str, EnrolledAgent]:
    """Two agents and six findings with distinct last_seen times (T0 .. T0+5h):

    desk-01 (no group): telegram process (T0), telegram deb (T0+1h), telegram network (T0+2h)
    lab-7 (group lab):  telegram process (T0+3h), discord alert (T0+4h),
                        telegram process opened T0+5h and resolved T0+6h
    """
    desk = enroll(hostname="desk-01")
    lab = enroll(secret=make_secret(group="lab"), hostname="lab-7")
    post_events(client, desk.headers, event(TELEGRAM_PROCESS, time=T0),
                event(TELEGRAM_DEB, time=T0 + HOUR), event(connection(), time=T0 + 2 * HOUR))
    post_events(client, lab.headers, event(process(9), time=T0 + 3 * HOUR),
                event(process(5, "Discord"), time=T0 + 4 * HOUR, policy=WIDER_POLICY),
                event(process(10), time=T0 + 5 * HOUR))
    # Resolving sets resolved_at; last_seen stays the last sighting.
    post_events(client, lab.headers, event(process(10), "finding_resolved", T0 + 6 * HOUR))
    return {"desk": desk, "lab": lab}


def listing(client: TestClient, token: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/findings", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def hours(items: list[dict[str, Any]]) -> list[int]:
    """Each finding's last_seen as hours after T0, in answer order."""
    return [round((dt.datetime.fromisoformat(item["last_seen"]) - T0) / HOUR) for item in items]


def test_list_answers_every_documented_field_newest_first(
    client: TestClient, admin_token: str, fleet: dict[str, EnrolledAgent]
) -> None:
    body = listing(client, admin_token)
    assert body["next_cursor"] is None
    assert hours(body["items"]) == [5, 4, 3, 2, 1, 0]
    newest_open = body["items"][1]
    assert set(newest_open) >= {
        "id", "agent_id", "host", "group", "app", "sensor", "key", "verdict", "action", "status",
        "triage", "triage_comment", "triage_by", "triage_at", "evidence", "alternative",
        "confidence", "first_seen", "last_seen", "count"}
    first = body["items"][-1]
    assert (first["host"], first["group"], first["app"], first["sensor"]) == (
        "desk-01", None, "telegram", "process")
    assert (first["status"], first["triage"], first["verdict"], first["alternative"]) == (
        "open", "new", "deny", "signal")
    assert first["agent_id"] == fleet["desk"].agent_id
    assert first["evidence"]["exe"] == "/usr/bin/telegram-desktop"
    assert first["evidence"]["pid"] == 4242
    assert body["items"][0]["status"] == "resolved"
    assert body["items"][0]["group"] == "lab"


# Each filter against the one fleet (every request only reads): (params, expected hours).
FILTERS: list[tuple[dict[str, str], list[int]]] = [
    ({"app": "telegram"}, [5, 3, 2, 1, 0]),
    ({"app": "discord"}, [4]),
    ({"status": "resolved"}, [5]),
    ({"status": "open", "app": "telegram"}, [3, 2, 1, 0]),
    ({"sensor": "installed"}, [1]),
    ({"sensor": "network"}, [2]),
    ({"verdict": "alert"}, [4]),
    ({"host": "desk-01"}, [2, 1, 0]),
    ({"host": "DESK-01"}, [2, 1, 0]),  # host names ignore case
    ({"host": "lab-*"}, [5, 4, 3]),
    ({"host": "desk"}, []),  # exact unless it ends in *
    ({"group": "lab"}, [5, 4, 3]),
    ({"since": (T0 + 2 * HOUR).isoformat()}, [5, 4, 3, 2]),
    ({"until": (T0 + 2 * HOUR).isoformat().replace("+00:00", "Z")}, [1, 0]),
    ({"since": "2025-03-01T13:00:00+01:00", "until": "2025-03-01T15:00:00Z"}, [2, 1, 0]),
    ({"since": "2025-03-02"}, []),
    ({"triage": "new", "group": "lab", "status": "open"}, [4, 3]),
    ({"app": ""}, [5, 4, 3, 2, 1, 0]),  # an empty form field means "any"
]


def test_filters(client: TestClient, admin_token: str,
                 fleet: dict[str, EnrolledAgent]) -> None:
    got = {str(params): hours(listing(client, admin_token, **params)["items"])
           for params, _ in FILTERS}
    assert got == {str(params): expected for params, expected in FILTERS}


def test_filter_by_agent_id(client: TestClient, admin_token: str,
                            fleet: dict[str, EnrolledAgent]) -> None:
    items = listing(client, admin_token, agent_id=fleet["lab"].agent_id)["items"]
    assert {item["host"] for item in items} == {"lab-7"}
    assert len(items) == 3


@pytest.mark.parametrize(("params", "field"), [
    ({"status": "closed"}, "status"),
    ({"triage": "ignored"}, "triage"),
    ({"sensor": "keyboard"}, "sensor"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2025-03-01T12:00:00"}, "since"),  # no time zone
    ({"since": "2025-03-02", "until": "2025-03-01"}, "until"),
    ({"limit": "0"}, "limit"),
    ({"limit": "501"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"staus": "open"}, "staus"),  # a typo is not silently "everything"
    ({"order": "random"}, "order"),
])
def test_bad_parameters_are_422_naming_the_parameter(
    client: TestClient, admin_token: str, params: dict[str, str], field: str
) -> None:
    error = assert_error(client.get(f"{API}/findings", params=params,
                                    headers=bearer(admin_token)), 422, "validation_error")
    assert field in [detail["field"] for detail in error["details"]] or \
        any(detail["loc"][-1] == field for detail in error["details"]), error


def test_every_problem_is_reported_at_once(client: TestClient, admin_token: str) -> None:
    error = assert_error(client.get(f"{API}/findings?status=x&sensor=y&since=z",
                                    headers=bearer(admin_token)), 422)
    assert [detail["field"] for detail in error["details"]] == ["status", "sensor", "since"]


@pytest.fixture
def many(client: TestClient, enroll: Callable[..., EnrolledAgent]) -> int:
    """23 findings on three hosts, several sharing a last_seen (ties must not break paging)."""
    agents = [enroll(hostname=name) for name in ("c-host", "a-host", "b-host")]
    total = 0
    for index, agent in enumerate(agents):
        events = [event(process(100 * index + n), time=T0 + (n % 3) * HOUR) for n in range(7)]
        if index == 0:
            events += [event(process(990 + n, "Discord"), time=T0, policy=WIDER_POLICY)
                       for n in range(2)]
        post_events(client, agent.headers, *events)
        total += len(events)
    return total


@pytest.mark.parametrize("order", ["last_seen", "first_seen", "app", "host", "id"])
@pytest.mark.parametrize("direction", ["desc", "asc"])
def test_cursor_pages_cover_everything_once_in_order(
    client: TestClient, admin_token: str, many: int, order: str, direction: str
) -> None:
    seen: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 5, "order": order, "direction": direction}
    pages = 0
    while True:
        body = listing(client, admin_token, **params)
        pages += 1
        assert len(body["items"]) <= 5
        seen += body["items"]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert pages == 5
    assert len(seen) == many == len({item["id"] for item in seen})
    keys: list[Any] = [item["id"] if order == "id" else (_value(item, order), item["id"])
                       for item in seen]
    assert keys == sorted(keys, reverse=direction == "desc")


def _value(item: dict[str, Any], order: str) -> Any:
    if order in ("last_seen", "first_seen"):
        return dt.datetime.fromisoformat(item[order])
    return item[order]


def test_a_cursor_only_fits_the_list_and_order_it_came_from(
    client: TestClient, admin_token: str, many: int
) -> None:
    cursor = listing(client, admin_token, limit=5)["next_cursor"]
    assert cursor
    # The same cursor with the same filters continues; another order or a mangled one fails.
    assert len(listing(client, admin_token, limit=5, cursor=cursor)["items"]) == 5
    for params in ({"order": "app"}, {"direction": "asc"}):
        assert_error(client.get(f"{API}/findings", params={"cursor": cursor, **params},
                                headers=bearer(admin_token)), 422, "invalid_cursor")
    for bad in ("x", cursor[:-3], "e30"):
        assert_error(client.get(f"{API}/findings", params={"cursor": bad},
                                headers=bearer(admin_token)), 422, "invalid_cursor")


def test_the_store_queries_the_dashboard_uses(db: DB, many: int) -> None:
    with db() as session:
        assert findings_query.count_findings(session, FindingFilters()) == many
        assert findings_query.count_findings(session, FindingFilters(app="discord")) == 2
        assert findings_query.count_findings(session, FindingFilters(host="a-*")) == 7
        exported = list(export_rows.as_dicts(export_rows.finding_chunks(
            session, findings_query.conditions(FindingFilters()), batch_size=4)))
        assert [item["id"] for item in exported] == sorted(
            (item["id"] for item in exported), reverse=True)
        assert len(exported) == many
        page, cursor = findings_query.query_findings(session, FindingFilters(), limit=3,
                                                     order="host", descending=False)
        assert [item["host"] for item in page] == ["a-host"] * 3 and cursor
        with pytest.raises(CursorError):
            findings_query.query_findings(session, FindingFilters(), cursor=cursor)
    filters = FindingFilters.from_query({"app": "telegram", "since": "2025-03-01",
                                         "page": "ignored"})
    assert filters.as_query() == {"app": "telegram", "since": "2025-03-01T00:00:00+00:00"}
    assert FindingFilters.from_query(filters.as_query()) == filters
    with pytest.raises(FilterError) as caught:
        FindingFilters.from_query({"status": "closed", "until": "soon"})
    assert [name for name, _ in caught.value.problems] == ["status", "until"]


# -- one finding, triage --------------------------------------------------------


def test_one_finding_with_its_timeline(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    opened = event(TELEGRAM_PROCESS, time=T0)
    action = {**event(TELEGRAM_PROCESS, time=T0 + dt.timedelta(seconds=1)), "type": "action",
              "result": {"action": "notify", "ok": True, "detail": "told alice"}}
    resolved = event(TELEGRAM_PROCESS, "finding_resolved", T0 + HOUR)
    post_events(client, enrolled_agent.headers, resolved, opened, action)
    [item] = listing(client, admin_token)["items"]
    response = client.get(f"{API}/findings/{item['id']}", headers=bearer(admin_token))
    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in item} == item
    assert [entry["type"] for entry in body["events"]] == [
        "finding_opened", "action", "finding_resolved"]
    assert [entry["id"] for entry in body["events"]] == [
        opened["id"], action["id"], resolved["id"]]
    assert body["events"][1]["payload"]["result"]["detail"] == "told alice"
    assert_error(client.get(f"{API}/findings/999999", headers=bearer(admin_token)), 404,
                 "not_found")
    assert_error(client.get(f"{API}/findings/abc", headers=bearer(admin_token)), 404)


def test_triage_records_who_when_why_and_an_audit_entry(
    client: TestClient, api_token: Callable[..., str], fleet: dict[str, EnrolledAgent],
    db: DB,
) -> None:
    analyst = api_token("analyst", "night shift")
    finding = listing(client, analyst, app="telegram", sensor="installed")["items"][0]
    response = client.post(f"{API}/findings/{finding['id']}/triage",
                           json={"state": "acknowledged", "comment": "  user told  "},
                           headers=bearer(analyst))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["triage"], body["triage_comment"]) == ("acknowledged", "user told")
    assert body["triage_by"].startswith("token:") and body["triage_by"].endswith(":night shift")
    triage_at = dt.datetime.fromisoformat(body["triage_at"])
    assert abs(dt.datetime.now(dt.UTC) - triage_at) < dt.timedelta(minutes=1)
    # The list shows it, and the triage filter finds it.
    [listed] = listing(client, analyst, triage="acknowledged")["items"]
    assert listed == body
    with db() as session:
        [entry] = audit.list_entries(session, action="finding.triage")
    assert (entry.actor, entry.target) == (body["triage_by"], f"finding:{finding['id']}")
    assert entry.before == {"triage": "new", "triage_comment": None, "triage_by": None,
                            "triage_at": None}
    assert entry.after is not None and entry.after["triage"] == "acknowledged"
    assert entry.after["triage_comment"] == "user told"


@pytest.mark.parametrize("body", [{"state": "ignored"}, {"comment": "x"},
                                  {"state": "resolved", "comment": "x" * 4001},
                                  {"state": "resolved", "extra": 1}])
def test_triage_validates_its_body(client: TestClient, admin_token: str,
                                   fleet: dict[str, EnrolledAgent], body: dict[str, Any],
                                   db: DB) -> None:
    finding = listing(client, admin_token)["items"][0]
    assert_error(client.post(f"{API}/findings/{finding['id']}/triage", json=body,
                             headers=bearer(admin_token)), 422, "validation_error")
    assert listing(client, admin_token)["items"][0]["triage"] == "new"
    assert_error(client.post(f"{API}/findings/424242/triage", json={"state": "resolved"},
                             headers=bearer(admin_token)), 404)
    with db() as session:
        assert audit.list_entries(session, action="finding.triage") == []


# -- export ---------------------------------------------------------------------


def test_csv_export_reads_back_with_the_csv_module(
    client: TestClient, api_token: Callable[..., str], fleet: dict[str, EnrolledAgent]
) -> None:
    viewer = api_token("viewer")
    response = client.get(f"{API}/findings/export",
                          params={"format": "csv", "app": "telegram", "status": "open"},
                          headers=bearer(viewer))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith('attachment; filename="warden-findings-')
    assert disposition.endswith('.csv"')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    records = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    listed = listing(client, viewer, app="telegram", status="open")["items"]
    assert sorted(int(record["id"]) for record in records) == sorted(
        item["id"] for item in listed)
    by_id = {item["id"]: item for item in listed}
    for record in records:
        item = by_id[int(record["id"])]
        assert json.loads(record["evidence"]) == item["evidence"]
        assert (record["host"], record["app"], record["status"], record["last_seen"]) == (
            item["host"], item["app"], item["status"], item["last_seen"])
        assert record["group"] == (item["group"] or "")
        assert int(record["count"]) == item["count"]


def test_csv_export_defuses_spreadsheet_formulas(
    client: TestClient, admin_token: str, enrolled_agent: EnrolledAgent
) -> None:
    hostile = event(process(66))
    hostile["finding"]["message"] = '=HYPERLINK("http://evil.example","click")'
    post_events(client, enrolled_agent.headers, hostile)
    response = client.get(f"{API}/findings/export?format=csv", headers=bearer(admin_token))
    [record] = list(csv.DictReader(io.StringIO(response.text)))
    assert record["message"] == "'" + hostile["finding"]["message"]
    # Evidence is JSON text (starts with "{"): kept exactly.
    assert json.loads(record["evidence"])["pid"] == 66


def test_json_export_streams_the_whole_filter_across_batches(
    client: TestClient, admin_token: str, enroll: Callable[..., EnrolledAgent]
) -> None:
    agent = enroll(hostname="busy")
    total = export_rows.EXPORT_BATCH + 150
    for start in range(0, total, 600):
        post_events(client, agent.headers, *[
            event(process(n), time=T0 + dt.timedelta(seconds=n))
            for n in range(start, min(start + 600, total))])
    response = client.get(f"{API}/findings/export",
                          params={"format": "json", "host": "busy"},
                          headers=bearer(admin_token))
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"].endswith('.json"')
    items = response.json()["items"]
    assert len(items) == total == len({item["id"] for item in items})
    assert {item["host"] for item in items} == {"busy"}
    empty = client.get(f"{API}/findings/export", params={"format": "json", "host": "nobody"},
                       headers=bearer(admin_token))
    assert empty.json() == {"items": []}
    csv_empty = client.get(f"{API}/findings/export", params={"format": "csv", "app": "none"},
                           headers=bearer(admin_token))
    assert list(csv.reader(io.StringIO(csv_empty.text))) == [list(CSV_COLUMNS)]


@pytest.mark.parametrize("query", ["", "?format=xml", "?format=csv&status=closed",
                                   "?format=csv&limit=5"])
def test_export_refuses_bad_parameters_before_streaming(
    client: TestClient, admin_token: str, query: str
) -> None:
    assert_error(client.get(f"{API}/findings/export{query}", headers=bearer(admin_token)), 422)
