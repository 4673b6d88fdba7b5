"""Pruning batches sized by time: a batch holds the write lock about BATCH_TARGET_SECONDS,
so ingest never queues behind a long delete (bench/pruning_ingest.py measures it).

The sizer is driven with chosen times; the prune itself runs on real SQLite and
PostgreSQL over a few thousand old events.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from server.db import utcnow
from server.jobs.pruning import (
    BATCH_ROWS,
    FIRST_BATCH_ROWS,
    MIN_BATCH_ROWS,
    BatchSizer,
    prune,
)
from server.models import Event

EnrolledAgent = Any
DB = sessionmaker[Session]
TARGET = 0.05


# Each row: the most rows a batch may take, the seconds each batch took in turn, and the
# sizes the sizer then asked for (the first being the size before any batch).
@pytest.mark.parametrize(("most", "took", "sizes"), [
    # Slow batches (a busy machine): down to the floor, never below it.
    (BATCH_ROWS, [0.5, 0.5], [FIRST_BATCH_ROWS, MIN_BATCH_ROWS, MIN_BATCH_ROWS]),
    # Fast batches: up, at most doubling each time, never above `most`.
    (BATCH_ROWS, [0.001, 0.001, 0.001, 0.001], [1_000, 2_000, 4_000, 5_000, 5_000]),
    # On target: unchanged.
    (BATCH_ROWS, [TARGET, TARGET], [1_000, 1_000, 1_000]),
    # Twice too slow: half.
    (BATCH_ROWS, [2 * TARGET], [1_000, 500]),
    # A small `most` is the floor too: the size the caller asked for, whatever the time.
    (7, [10.0, 0.0001], [7, 7, 7]),
    (500, [1.0], [500, MIN_BATCH_ROWS]),
])
def test_batch_sizes_follow_the_time_a_batch_took(most: int, took: list[float],
                                                  sizes: list[int]) -> None:
    sizer = BatchSizer(most, target_seconds=TARGET)
    seen = [sizer.rows]
    for seconds in took:
        sizer.took(seconds)
        seen.append(sizer.rows)
    assert seen == sizes


def test_a_large_prune_starts_small_and_never_more_than_doubles(
    enrolled_agent: EnrolledAgent, db: DB
) -> None:
    old = utcnow() - dt.timedelta(days=200)
    rows = [{"id": str(uuid.uuid4()), "agent_id": enrolled_agent.agent_id, "type": "action",
             "time": old, "received_at": old + dt.timedelta(seconds=number),
             "finding_key": "/busy/telegram", "payload": {"n": number}}
            for number in range(2_600)]
    with db() as session:
        session.execute(sa.insert(Event), rows)
        session.commit()
        stored = session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0
    deleted: list[int] = []
    left = [stored]

    def count_between_batches() -> bool:
        with db() as session:
            now = session.scalar(sa.select(sa.func.count()).select_from(Event)) or 0
        deleted.append(left[-1] - now)
        left.append(now)
        return True

    report = prune(db, 30, between_batches=count_between_batches)

    with db() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Event)) == stored - len(rows)
    assert report.events == len(rows) and report.batches == len(deleted) + 1
    # The last batch ends the prune without a pause, so it is not in `deleted`.
    assert deleted[0] == FIRST_BATCH_ROWS < BATCH_ROWS
    for before, after in itertools.pairwise(deleted):
        assert MIN_BATCH_ROWS <= after <= 2 * before
    assert sum(deleted) < len(rows)
