"""The evidence models (policies.evidence): every evidence the engine builds passes them
unchanged, a wrong type is refused where it is, and long text and lists are cut.

The first property is what keeps the server's ingest checks from refusing a real agent:
whatever an observation holds, the engine's evidence for it validates to itself.
Hypothesis runs derandomised and without its example database, as elsewhere.
"""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from policies.evidence import (
    CUT_MARK,
    LIST_ITEMS,
    PATH_CHARS,
    TEXT_CHARS,
    Sensor,
    evidence_of,
    validate_evidence,
)
from policies.observations import (
    ConnectionObservation,
    InstalledObservation,
    InstallSource,
    Observation,
    ProcessObservation,
)

FUZZ = settings(max_examples=200, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

text = st.text(max_size=40)
maybe_text = st.none() | text
pids = st.integers(min_value=0, max_value=2**32 - 1)

processes = st.builds(
    ProcessObservation, pid=pids, name=text,
    create_time=st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False),
    exe=maybe_text, cmdline=st.lists(text, max_size=8).map(tuple), username=maybe_text,
    sha256=st.none() | st.text("0123456789abcdef", min_size=64, max_size=64),
    ppid=st.none() | pids, content=st.lists(text, max_size=4).map(tuple))
installs = st.builds(
    InstalledObservation, source=st.sampled_from(get_args(InstallSource)), id=text,
    path=maybe_text, version=maybe_text, user=maybe_text, display_name=maybe_text,
    publisher=maybe_text, team_id=maybe_text, content=st.lists(text, max_size=4).map(tuple))
connections = st.builds(
    ConnectionObservation, remote_ip=text, remote_port=st.integers(0, 65_535), local_ip=text,
    local_port=st.integers(0, 65_535), protocol=st.sampled_from(["tcp", "udp"]),
    pid=st.none() | pids, process_name=maybe_text, remote_host=maybe_text,
    host_from_dns=st.booleans())


def sensor_of(observation: Observation) -> Sensor:
    if isinstance(observation, ProcessObservation):
        return "process"
    return "installed" if isinstance(observation, InstalledObservation) else "network"


@FUZZ
@given(st.one_of(processes, installs, connections))
def test_the_engines_evidence_passes_unchanged(observation: Observation) -> None:
    sent = json.loads(json.dumps(evidence_of(observation)))  # what goes over the wire
    sensor = sensor_of(observation)
    assert validate_evidence(sensor, sent) == sent
    # A resolve or an action may carry it without naming the sensor.
    assert validate_evidence(None, sent) == sent


@pytest.mark.parametrize(("sensor", "evidence", "where"), [
    # The example: a number where the path belongs.
    ("process", {"exe": 123}, ("exe",)),
    # Strict: a numeric string is not a pid, and neither is true.
    ("process", {"pid": "4242"}, ("pid",)),
    ("process", {"pid": True}, ("pid",)),
    ("process", {"pid": -1}, ("pid",)),
    ("process", {"cmdline": "telegram --autostart"}, ("cmdline",)),
    ("process", {"cmdline": ["ok", 7]}, ("cmdline", 1)),
    ("process", {"sha256": "not a digest"}, ("sha256",)),
    ("process", {"create_time": float("inf")}, ("create_time",)),
    ("installed", {"path": ["/opt/Telegram"]}, ("path",)),
    ("installed", {"contents": {"Telegram": 1}}, ("contents",)),
    ("network", {"remote_port": 70_000}, ("remote_port",)),
    ("network", {"host_from_dns": "yes"}, ("host_from_dns",)),
    ("network", {"remote_host": {"nested": "object"}}, ("remote_host",)),
    # No sensor named: every field keeps its type.
    (None, {"exe": 123}, ("exe",)),
    # Nor where another sensor's field comes along: the API documents one evidence object.
    ("installed", {"sha256": [True]}, ("sha256",)),
    ("process", {"source": 5}, ("source",)),
])
def test_a_wrong_type_is_refused_where_it_is(
    sensor: Sensor | None, evidence: dict[str, Any], where: tuple[str | int, ...]
) -> None:
    with pytest.raises(ValidationError) as raised:
        validate_evidence(sensor, evidence)
    assert [error["loc"] for error in raised.value.errors()] == [where]


def test_a_whole_number_written_with_a_point_is_that_number() -> None:
    # 469.0 is an integer to JSON (and to the API's document); 469.5 is not.
    assert validate_evidence("process", {"pid": 469.0, "ppid": 0.0}) == {"pid": 469, "ppid": 0}
    assert validate_evidence("network", {"remote_port": 443.0}) == {"remote_port": 443}
    with pytest.raises(ValidationError):
        validate_evidence("process", {"pid": 469.5})


def test_evidence_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(ValidationError):
        validate_evidence("process", ["pid", 1])


def test_long_text_and_long_lists_are_cut_not_refused() -> None:
    evidence = validate_evidence("process", {
        "exe": "/" + "x" * 100_000, "name": "n" * 5000,
        "cmdline": ["telegram"] + ["--flag"] * 100_000})
    assert len(evidence["exe"]) == PATH_CHARS and evidence["exe"].endswith(CUT_MARK)
    assert evidence["exe"].startswith("/xxx")
    assert len(evidence["name"]) == TEXT_CHARS and evidence["name"].endswith(CUT_MARK)
    assert len(evidence["cmdline"]) == LIST_ITEMS and evidence["cmdline"][0] == "telegram"
    installed = validate_evidence("installed", {"contents": ["f" * 9000] * 500})
    assert len(installed["contents"]) == LIST_ITEMS
    assert {len(name) for name in installed["contents"]} == {PATH_CHARS}


def test_unknown_keys_are_dropped_and_absent_ones_stay_absent() -> None:
    assert validate_evidence("network", {"remote_ip": "149.154.167.51", "extra": [[[]]]}) == {
        "remote_ip": "149.154.167.51"}
    assert validate_evidence("process", {"pid": 1, "exe": None}) == {"pid": 1, "exe": None}
