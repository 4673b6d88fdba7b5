"""Which app ids the server knows, and counts by app kept to those: the rest is `other`.

Every finding names its app, and the agent chooses that name. The server knows
the apps of its catalog and of every policy version it stores: a policy may
define apps of its own, and an agent may still run an older version. Any
other id (an agent on a newer catalog, or one making ids up) is kept on its
finding, where reviewers see it, but counted as `other` wherever findings are
counted by app — `/metrics`, `GET /api/v1/stats`, the overview — so one agent
cannot add a series, a stats key or a table row per made-up id.

Unknown ids are not refused at ingest: a refused batch stays in the agent's
spool and blocks every event after it, and an agent whose catalog is newer
than the server's would then stop reporting altogether.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Collection, Iterable, Mapping

import sqlalchemy as sa
from sqlalchemy.orm import Session

from server.models import PolicyVersion

OTHER = "other"


class KnownApps:
    """The known ids, read again only when the stored policy versions change.

    Bundles never change once stored, so the count and the highest number of
    the versions say whether anything is new; one cheap query per use.
    """

    def __init__(self, catalog_ids: Iterable[str]) -> None:
        self._catalog = frozenset(catalog_ids)
        self._stamp: tuple[int, int | None] | None = None
        self._ids = self._catalog
        # /metrics scrapes and dashboard pages run on several threads at once.
        self._lock = threading.Lock()

    def ids(self, session: Session) -> frozenset[str]:
        count, highest = session.execute(
            sa.select(sa.func.count(), sa.func.max(PolicyVersion.number))).one()
        stamp = (int(count), highest)
        with self._lock:
            if stamp == self._stamp:
                return self._ids
        ids = set(self._catalog)
        for text in session.scalars(sa.select(PolicyVersion.bundle)):
            bundle = json.loads(text)
            ids.update(bundle.get("apps", {}), bundle.get("rules", {}))
        with self._lock:
            self._stamp, self._ids = stamp, frozenset(ids)
            return self._ids


def bounded_by_app(counts: Mapping[str, int], known: Collection[str]) -> dict[str, int]:
    """`counts` with every app id outside `known` added up under `other`, sorted by id."""
    bounded: dict[str, int] = {}
    for app, count in counts.items():
        name = app if app in known else OTHER
        bounded[name] = bounded.get(name, 0) + count
    return dict(sorted(bounded.items()))
