"""What the findings and violations lists share: their filter form, read into the same
filter models the API uses (with an inclusive "to" date), and one page of rows with its
total, or the form's problems to show beside it."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from fastapi import Request
from sqlalchemy.orm import Session

from server.dashboard.web import PageError, problem_text
from server.store.listing import CursorError, FilterError

PAGE_SIZE = 50


class ListFilters(Protocol):
    @classmethod
    def names(cls) -> tuple[str, ...]: ...


FiltersT = TypeVar("FiltersT", bound=ListFilters)
RowQuery = Callable[..., tuple[list[dict[str, Any]], str | None]]


def filters_from(parse: Callable[[Mapping[str, str]], FiltersT],
                 params: Mapping[str, str]) -> FiltersT:
    """Filters from the form (`parse` is the model's from_query); `until` given as a date
    includes that whole day."""
    values = dict(params)
    until = values.get("until", "").strip()
    if len(until) == 10:
        # A bad date is left as typed: from_query then names it.
        with contextlib.suppress(ValueError):
            values["until"] = (dt.date.fromisoformat(until) + dt.timedelta(days=1)).isoformat()
    return parse(values)


def download_filters(parse: Callable[[Mapping[str, str]], FiltersT],
                     request: Request) -> FiltersT:
    """The list's filters for its CSV/JSON download; a bad one is a 400 page naming it."""
    try:
        return filters_from(parse, request.query_params)
    except FilterError as exc:
        raise PageError(400, problem_text(exc)) from exc


def form_values(model: type[ListFilters], params: Mapping[str, str]) -> dict[str, str]:
    """The filter fields as the person typed them, to fill the form and build links."""
    return {name: params.get(name, "").strip() for name in model.names()
            if name != "agent_id"}


@dataclass
class ListPage:
    rows: list[dict[str, Any]] = field(default_factory=list)
    next_cursor: str | None = None
    total: int = 0
    problems: dict[str, str] = field(default_factory=dict)


def read_page(session: Session, filters: Callable[[], Any], query: RowQuery,
              count: Callable[[Session, Any], int], *, order: str, descending: bool,
              cursor: str) -> ListPage:
    """One page of `query`'s rows under the form's filters, and their total; a bad filter
    or a stale cursor gives an empty page with the problem to show instead of an error."""
    try:
        chosen = filters()
        rows, next_cursor = query(session, chosen, limit=PAGE_SIZE, cursor=cursor or None,
                                  order=order, descending=descending)
        return ListPage(rows, next_cursor, count(session, chosen))
    except FilterError as exc:
        return ListPage(problems=dict(exc.problems))
    except CursorError:
        return ListPage(problems={
            "cursor": "that page link is out of date; start from the first page"})
