"""Shared pieces of the list queries: keyset cursors, filter errors, exact-or-prefix matching.

Lists page by keyset, never by OFFSET: a cursor holds the sort key of the
last row a page showed, and the next page starts strictly after it, so the
database walks an index from there instead of skipping rows it already sent,
and rows added meanwhile neither shift nor repeat a page. The cursor is
opaque to clients (base64 of a small JSON), and names the ordering it was
made for, so one cannot be replayed against another list or sort order.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute

from server.schemas.common import MAX_CURSOR_CHARS
from server.schemas.filters import FilterError, filters_from_form

__all__ = ["CursorError", "FilterError", "decode_cursor", "encode_cursor", "filters_from_form",
           "text_matches"]


class CursorError(ValueError):
    """A cursor that this list did not hand out (mangled, or from another list or order)."""


def encode_cursor(kind: str, values: Sequence[str | int]) -> str:
    data = json.dumps({"k": kind, "v": list(values)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, types: Sequence[type]) -> list[Any]:
    """The key a cursor holds; CursorError unless it was made for `kind` with these types."""
    if len(cursor) > MAX_CURSOR_CHARS:
        raise CursorError("the cursor is too long")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise CursorError("the cursor is not one this server handed out") from exc
    if not isinstance(data, dict) or not isinstance(data.get("v"), list):
        raise CursorError("the cursor is not one this server handed out")
    if data.get("k") != kind:
        raise CursorError("the cursor belongs to another list or sort order; start again "
                          "without it")
    values: list[Any] = data["v"]
    if len(values) != len(types) or not all(
            type(value) is wanted for value, wanted in zip(values, types, strict=True)):
        raise CursorError("the cursor is not one this server handed out")
    return values


def text_matches(column: sa.ColumnElement[str] | InstrumentedAttribute[str], wanted: str,
                 caseless: bool = False) -> sa.ColumnElement[bool]:
    """`column == wanted`, or a prefix match when `wanted` ends in `*` (`desk-*`)."""
    compared: sa.ColumnElement[str] = sa.func.lower(column) if caseless else column.expression
    if caseless:
        wanted = wanted.lower()
    if not wanted.endswith("*"):
        return compared == wanted
    escaped = wanted[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return compared.like(escaped + "%", escape="\\")
