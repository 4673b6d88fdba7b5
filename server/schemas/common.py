"""What every resource shares: timestamps, pages, page sizes, cursors and filter values."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
# Generous for a cursor (a timestamp, a host name and an id), tiny for an attacker.
MAX_CURSOR_CHARS = 2048
MAX_FILTER_CHARS = 255
# Row ids are `integer` columns on PostgreSQL: a larger number cannot name a row, and
# handed to the database it fails there (a 500) instead of being refused (a 422).
MAX_ROW_ID = 2**31 - 1

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"},
                                 description="RFC 3339, UTC")]


class Answer(BaseModel):
    """A response body. Keys a newer server adds are ignored, so an older CLI still reads it."""

    model_config = ConfigDict(extra="ignore")


class Page(Answer, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="pass it back as `cursor` for the next page; null on the last page")


class Query(BaseModel):
    """Query parameters. An unknown one is refused: `?staus=open` must not list everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time (`2025-03-01T12:00:00Z`) or a date (midnight UTC), as aware UTC."""
    try:
        if len(text) == 10:
            return dt.datetime.combine(dt.date.fromisoformat(text), dt.time(), dt.UTC)
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time (2025-03-01T12:00:00Z) or a "
                         "date (2025-03-01)") from None
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z for UTC or an offset like +02:00")
    return value.astimezone(dt.UTC)


def _blank_is_none(value: str | None) -> str | None:
    # HTML forms send empty fields: an empty filter means "any".
    return (value.strip() or None) if value is not None else None


def _time_or_none(value: Any) -> Any:
    if isinstance(value, str):
        return parse_time(value.strip()) if value.strip() else None
    return value


_BLANK = {"type": "string", "maxLength": 0}

# A filter on free text: exact, or a prefix where the route says `*` may end it.
TextFilter = Annotated[Annotated[str, Field(max_length=MAX_FILTER_CHARS)] | None,
                       AfterValidator(_blank_is_none)]
# A bound on a time: RFC 3339 with a zone, or a date meaning midnight UTC.
TimeFilter = Annotated[
    dt.datetime | None, BeforeValidator(_time_or_none),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date-time"},
                              {"type": "string", "format": "date"}, _BLANK]}),
]
Limit = Annotated[int, Field(ge=1, le=MAX_LIMIT, description="page size")]
Cursor = Annotated[
    Annotated[str, Field(max_length=MAX_CURSOR_CHARS, pattern=r"^[A-Za-z0-9_-]*$")] | None,
    AfterValidator(_blank_is_none),
    Field(description="opaque: the `next_cursor` of the previous page of the same list, "
                      "asked for with the same order and direction (`422 invalid_cursor` "
                      "otherwise)"),
]


def blank_is_any(value: str | None) -> str | None:
    """For choice filters that also take "" (any): the empty choice becomes None."""
    return value or None
