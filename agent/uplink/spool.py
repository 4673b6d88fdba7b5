"""The durable event spool: every event is on disk before anything acts on it.

SQLite in WAL mode with `synchronous=FULL`, so an event survives a crash or a
power cut the moment `append` returns. Events leave the spool only when the
server acknowledged them (`ack`). The spool is bounded by count and size; when
full, the oldest events go first and a `dropped` counter says how many — it is
reported at check-in, so a loss is never silent.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    size INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS open_findings (key TEXT PRIMARY KEY, finding TEXT NOT NULL);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0), ('bytes', 0);
"""


class SpoolError(Exception):
    """The spool cannot be written (read-only or full disk); the message says why."""


class Spool:
    def __init__(self, path: Path, max_events: int = 100_000, max_bytes: int = 64 << 20) -> None:
        self.path = path
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise SpoolError(f"cannot open the event spool {path}: {exc}") from exc
        path.chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, event: dict[str, Any], opened: dict[str, Any] | None = None,
               resolved: str | None = None) -> str:
        """Store one event durably and return its id (a UUID, assigned if missing).

        `opened` (a finding) or `resolved` (a finding key) update the set of
        findings the agent has reported open, in the same transaction as the
        event: after a crash, that set and the events to upload always agree.
        """
        event.setdefault("id", str(uuid.uuid4()))
        body = json.dumps(event, sort_keys=True, separators=(",", ":"))
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute("INSERT OR IGNORE INTO events (id, body, size) VALUES (?, ?, ?)",
                                 (event["id"], body, len(body)))
                if opened is not None:
                    self._db.execute("INSERT OR REPLACE INTO open_findings (key, finding) "
                                     "VALUES (?, ?)", (opened["key"], json.dumps(opened)))
                if resolved is not None:
                    self._db.execute("DELETE FROM open_findings WHERE key = ?", (resolved,))
                self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'bytes'",
                                 (len(body),))
                self._enforce_bounds()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot write to the event spool {self.path}: {exc}") from exc
        return str(event["id"])

    def _enforce_bounds(self) -> None:
        count, size = self._db.execute(
            "SELECT COUNT(*), (SELECT value FROM counters WHERE name = 'bytes') FROM events"
        ).fetchone()
        if count <= self.max_events and size <= self.max_bytes:
            return
        # Drop oldest-first, a tenth of the bound at a time so a full spool is not
        # trimmed on every append.
        excess = max(count - self.max_events, self.max_events // 10, 1)
        rows = self._db.execute("SELECT seq, size FROM events ORDER BY seq LIMIT ?",
                                (excess,)).fetchall()
        freed = sum(row[1] for row in rows)
        while size - freed > self.max_bytes:
            more = self._db.execute("SELECT seq, size FROM events WHERE seq > ? ORDER BY seq "
                                    "LIMIT 100", (rows[-1][0],)).fetchall()
            if not more:
                break
            rows.extend(more)
            freed += sum(row[1] for row in more)
        last_seq = rows[-1][0]
        self._db.execute("DELETE FROM events WHERE seq <= ?", (last_seq,))
        self._db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'",
                         (len(rows),))
        self._db.execute("UPDATE counters SET value = value - ? WHERE name = 'bytes'", (freed,))

    def peek(self, limit: int = 500, max_bytes: int = 900 * 1024) -> list[dict[str, Any]]:
        """The oldest events, in order, up to `limit` events and about `max_bytes`."""
        rows = self._read("SELECT body, size FROM events ORDER BY seq LIMIT ?", (limit,))
        batch: list[dict[str, Any]] = []
        total = 0
        for body, size in rows:
            if batch and total + size > max_bytes:
                break
            batch.append(json.loads(body))
            total += size
        return batch

    def ack(self, ids: Iterable[str]) -> int:
        """Forget events the server has committed. Returns how many were removed."""
        id_list = list(ids)
        if not id_list:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                removed = 0
                freed = 0
                for start in range(0, len(id_list), 500):
                    chunk = id_list[start:start + 500]
                    marks = ",".join("?" * len(chunk))
                    freed += self._db.execute(
                        f"SELECT COALESCE(SUM(size), 0) FROM events WHERE id IN ({marks})", chunk
                    ).fetchone()[0]
                    removed += self._db.execute(f"DELETE FROM events WHERE id IN ({marks})",
                                                chunk).rowcount
                self._db.execute("UPDATE counters SET value = value - ? WHERE name = 'bytes'",
                                 (freed,))
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise SpoolError(f"cannot update the event spool {self.path}: {exc}") from exc
        return removed

    def open_findings(self) -> list[dict[str, Any]]:
        """The findings reported open and not yet resolved (see `append`)."""
        rows = self._read("SELECT finding FROM open_findings ORDER BY key")
        return [json.loads(row[0]) for row in rows]

    def depth(self) -> int:
        return int(self._read("SELECT COUNT(*) FROM events")[0][0])

    def dropped(self) -> int:
        return int(self._read("SELECT value FROM counters WHERE name = 'dropped'")[0][0])

    def _read(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[Any]:
        # A read can fail too (a disk I/O error, a file gone); callers handle SpoolError.
        with self._lock:
            try:
                return self._db.execute(sql, parameters).fetchall()
            except sqlite3.Error as exc:
                raise SpoolError(f"cannot read the event spool {self.path}: {exc}") from exc

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")
