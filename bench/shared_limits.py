"""What it costs to keep rate limits and logouts in the database instead of in memory.

Per database (a fresh SQLite file; PostgreSQL when WARDEN_TEST_DATABASE_URL is
set, in a schema of its own), on the server's own write sessions:

- `take`: one failed-login attempt (two keys locked, checked and counted in one
  transaction): what every dashboard login and every enrollment now costs first;
- `give back`: the success path's second transaction;
- `logout check`: the lookup every dashboard page makes for its session id;
- `concurrent take`: 8 threads attempting on one key at once (the lock's queue).

Printed: wall ms and process CPU ms per operation (median of the timed runs).
Run: .venv/bin/python bench/shared_limits.py [--runs 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from server import db
from server.dashboard.sessions import LoggedOut
from server.throttling import FailureWindow


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            yield f"sqlite:///{Path(directory) / 'warden.db'}"
        return
    base = os.environ["WARDEN_TEST_DATABASE_URL"]
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield make_url(base).update_query_dict(
            {"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def timed(operation: Callable[[int], object], runs: int) -> tuple[float, float]:
    """Median wall ms and mean CPU ms per call."""
    walls = []
    cpu_start = time.process_time()
    for index in range(runs):
        started = time.perf_counter()
        operation(index)
        walls.append((time.perf_counter() - started) * 1000)
    cpu = (time.process_time() - cpu_start) * 1000 / runs
    return statistics.median(walls), cpu


def concurrent_takes(window: FailureWindow, threads: int, each: int) -> float:
    """Wall ms per attempt with `threads` attempting on one key at once."""
    start = threading.Barrier(threads)

    def attempt(worker: int) -> None:
        start.wait()
        for index in range(each):
            window.take(("address:shared", 10**9), (f"account:{worker}-{index}", 10**9))

    workers = [threading.Thread(target=attempt, args=(n,)) for n in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - started) * 1000 / (threads * each)


def bench(kind: str, runs: int) -> None:
    with database(kind) as url:
        engine = db.create_engine(url)
        try:
            db.run_migrations(engine)
            writers: sessionmaker[Session] = db.session_factory(db.writer(engine))
            readers: sessionmaker[Session] = db.session_factory(engine)
            window = FailureWindow(writers, "login", 900)
            take = timed(lambda i: window.take((f"account:user{i}", 5),
                                               ("address:10.0.0.1", 10**9)), runs)
            give_back = timed(lambda i: window.give_back(f"account:user{i}"), runs)
            logged_out = LoggedOut(readers, writers)
            logged_out.add("gone", time.time() + 3600, time.time())
            check = timed(lambda i: logged_out.contains(f"sid{i}"), runs)
            crowd = concurrent_takes(window, 8, max(10, runs // 8))
        finally:
            engine.dispose()
    print(f"{kind:10}  take {take[0]:6.2f} ms wall {take[1]:6.2f} ms CPU | "
          f"give back {give_back[0]:6.2f} / {give_back[1]:6.2f} | "
          f"logout check {check[0]:5.2f} / {check[1]:5.2f} | "
          f"8 threads on one key {crowd:6.2f} ms wall per attempt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    kinds = ["sqlite"] + (["postgresql"] if os.environ.get("WARDEN_TEST_DATABASE_URL") else [])
    for kind in kinds:
        bench(kind, args.runs)


if __name__ == "__main__":
    main()
