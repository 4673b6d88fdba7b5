"""The spool keeps every event until acknowledged, survives a crash, and drops loudly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.uplink.spool import Spool, SpoolError


def test_events_stay_until_acknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    ids = [spool.append({"type": "finding_opened", "n": n}) for n in range(5)]
    assert len(set(ids)) == 5
    batch = spool.peek(limit=3)
    assert [event["n"] for event in batch] == [0, 1, 2]
    assert spool.ack([event["id"] for event in batch]) == 3
    assert [event["n"] for event in spool.peek()] == [3, 4]
    assert spool.ack(["not-an-id"]) == 0
    assert spool.depth() == 2
    spool.close()


def test_an_event_written_survives_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    code = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from agent.uplink.spool import Spool\n"
        f"s = Spool(Path({str(path)!r}))\n"
        "s.append({'id': 'kept-1', 'type': 'x'})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    assert result.returncode == -9
    spool = Spool(path)
    assert [event["id"] for event in spool.peek()] == ["kept-1"]
    spool.close()


def test_bounded_oldest_first_with_a_dropped_counter(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_events=100)
    for n in range(150):
        spool.append({"n": n})
    remaining = [event["n"] for event in spool.peek(limit=1000)]
    assert len(remaining) <= 100
    assert remaining[-1] == 149  # the newest is kept
    assert remaining == sorted(remaining)
    assert spool.dropped() == 150 - len(remaining)
    spool.close()


def test_bounded_by_size(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db", max_events=10_000, max_bytes=64 * 1024)
    for n in range(200):
        spool.append({"n": n, "pad": "x" * 1000})
    assert spool.depth() < 200
    assert spool.dropped() == 200 - spool.depth()
    assert spool.peek(limit=1000)[-1]["n"] == 199
    spool.close()


def test_peek_respects_a_byte_budget(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    for n in range(10):
        spool.append({"n": n, "pad": "y" * 1000})
    assert 1 <= len(spool.peek(limit=10, max_bytes=3000)) <= 3
    spool.close()


def test_read_only_spool_file_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    Spool(path).close()
    spool = Spool(path)
    spool._db.execute("PRAGMA query_only = ON")  # what a read-only mount looks like to SQLite
    with pytest.raises(SpoolError, match="cannot write to the event spool"):
        spool.append({"n": 1})
    spool.close()


def test_open_findings_change_with_their_events_in_one_transaction(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    finding = {"key": "telegram|process|pid:1:1.00", "app": "telegram"}
    spool.append({"type": "finding_opened"}, opened=finding)
    assert spool.open_findings() == [finding]
    spool.append({"type": "finding_resolved"}, resolved=finding["key"])
    assert spool.open_findings() == []
    assert spool.depth() == 2
    spool.close()


def test_a_failed_append_changes_neither_events_nor_open_findings(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool._db.execute("PRAGMA query_only = ON")
    with pytest.raises(SpoolError):
        spool.append({"type": "finding_opened"}, opened={"key": "k"})
    spool._db.execute("PRAGMA query_only = OFF")
    assert spool.open_findings() == [] and spool.depth() == 0
    spool.close()


def test_a_failed_read_is_a_spool_error_the_threads_handle(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.append({"id": "e1", "type": "finding_opened"})
    spool._db.execute("DROP TABLE events")  # as a disk error would fail the read
    for read in (spool.depth, spool.peek):
        with pytest.raises(SpoolError, match="cannot read the event spool"):
            read()
    spool.close()
