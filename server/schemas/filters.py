"""The list filters: which findings, violations and agents a person asks for.

One model per list is the API's query parameters (server.schemas.findings and
the others add paging), the dashboard's form and the CLI's options. Plain
pydantic, no database: the SQL each filter means is the store's
(`server.store.findings_query.conditions`, ...), so the CLI and the API client
load these without SQLAlchemy.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self, TypeVar, cast, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from policies.vocabulary import AgentState, FindingStatus, FindingVerdict, Sensor, TriageState
from server.schemas.common import Query, TextFilter, TimeFilter, blank_is_any

FiltersT = TypeVar("FiltersT", bound=BaseModel)

Order = Literal["last_seen", "first_seen", "app", "host", "id"]
ORDERS: tuple[str, ...] = get_args(Order)
ViolationOrder = Literal["last_seen", "first_seen", "id"]
VIOLATION_ORDERS: tuple[str, ...] = get_args(ViolationOrder)


class FilterError(ValueError):
    """Query parameters that cannot be used; `problems` lists (parameter, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {message}" for name, message in problems))

    def details(self) -> list[dict[str, Any]]:
        """The API's validation detail shape (see server.api.errors.validation_details)."""
        return [{"loc": ["query", name], "field": name, "message": message,
                 "type": "value_error"} for name, message in self.problems]


def filters_from_form(model: type[FiltersT], params: Mapping[str, str]) -> FiltersT:
    """`model` from a form's fields: unknown keys ignored, blank ones "any"; FilterError
    naming every bad field (the dashboard shows them beside the form)."""
    values = {name: text for name in model.model_fields
              if (text := (params.get(name) or "").strip())}
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise FilterError([(str(error["loc"][0]) if error["loc"] else "",
                            error["msg"].removeprefix("Value error, "))
                           for error in exc.errors()]) from exc


class ListFilters(Query):
    """One list's filters: None means "any"; `since` < `until` where a list has both."""

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The query parameter names the filters read: the fields of the list's filter
        class, without the paging a subclass for the API adds (limit, cursor, order)."""
        filters = next(klass for klass in cls.__mro__ if ListFilters in klass.__bases__)
        return tuple(cast("type[ListFilters]", filters).model_fields)

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> Self:
        """Filters from a form's fields; other keys are ignored, empty values mean "any".

        Raises FilterError listing every field that is wrong, not just the first.
        """
        return filters_from_form(cls, params)

    def as_query(self) -> dict[str, str]:
        """The filters as query parameters again (for links to the next page or an export)."""
        query: dict[str, str] = {}
        for name in self.names():
            value = getattr(self, name)
            if value is not None:
                query[name] = value.isoformat() if isinstance(value, dt.datetime) else value
        return query

    @field_validator("until", check_fields=False)
    @classmethod
    def _after_since(cls, until: dt.datetime | None, info: ValidationInfo) -> dt.datetime | None:
        since = info.data.get("since")
        if since is not None and until is not None and since >= until:
            raise ValueError("must be later than since")
        return until


class FindingFilters(ListFilters):
    """Which findings to show; None means "any". Times bound `last_seen`: since <= t < until.

    `host` matches the agent's hostname without regard to case, exactly, or by
    prefix when it ends in `*` (`desk-*`). The same model is the API's query
    parameters (server.schemas.findings adds paging) and the dashboard's form.
    """

    app: TextFilter = None
    status: Annotated[Literal[FindingStatus, ""] | None,
                      AfterValidator(blank_is_any)] = None
    triage: Annotated[Literal[TriageState, ""] | None, AfterValidator(blank_is_any)] = None
    host: TextFilter = Field(default=None, description="exact, or a prefix ending in *; "
                                                       "ignores case")
    group: TextFilter = None
    sensor: Annotated[Literal[Sensor, ""] | None, AfterValidator(blank_is_any)] = None
    verdict: Annotated[Literal[FindingVerdict, ""] | None,
                       AfterValidator(blank_is_any)] = None
    agent_id: TextFilter = None
    since: TimeFilter = Field(default=None, description="last_seen at or after")
    until: TimeFilter = Field(default=None, description="last_seen before; later than since")

class ViolationFilters(ListFilters):
    """Which violations to show; None means "any". `since` and `until` bound `last_seen`.

    `host` matches the hostname without regard to case, exactly or by prefix
    ending in `*`, as the findings list does.
    """

    app: TextFilter = None
    status: Annotated[Literal[FindingStatus, ""] | None,
                      AfterValidator(blank_is_any)] = None
    triage: Annotated[Literal[TriageState, ""] | None, AfterValidator(blank_is_any)] = None
    host: TextFilter = Field(default=None, description="exact, or a prefix ending in *; "
                                                       "ignores case")
    group: TextFilter = None
    agent_id: TextFilter = None
    since: TimeFilter = Field(default=None, description="last_seen at or after")
    until: TimeFilter = Field(default=None, description="last_seen before; later than since")

class AgentFilters(ListFilters):
    """Which agents to list; `host` is exact or a `desk-*` prefix, ignoring case."""

    state: Annotated[Literal[AgentState, ""] | None, AfterValidator(blank_is_any)] = Field(
        default=None, description="revoked; silent (not seen for a few check-in intervals); "
                                  "else active")
    group: TextFilter = None
    host: TextFilter = Field(default=None, description="exact, or a prefix ending in *; "
                                                       "ignores case")
    os: TextFilter = None
    notify: Annotated[Literal["failing", ""] | None, AfterValidator(blank_is_any)] = Field(
        default=None, description="`failing`: agents whose latest notification failed, so "
                                  "their users cannot be told")
