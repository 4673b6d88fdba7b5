"""A chunk of export rows (server.store.export_rows) as CSV or JSON text, column by column.

The bytes are exactly those of the per-row writers the exports had: each CSV
cell is `server.untrusted_text.csv_cell(name, value)` and each JSON row is
`json.dumps(item, ensure_ascii=False)` of the API shape. At 120,000 rows a
Python call per cell (26 a row) was most of the time, so a column is checked
once and takes a fast path when one provably gives the same text:

- text: one search for a control character in the whole column and one
  mapped `startswith` for a formula; either found (rare), its cells go
  through `csv_cell` one by one;
- numbers: `str` (a negative one starts with "-", a formula start: `csv_cell`);
- anything else (evidence, outcomes, mixed types): `csv_cell` per cell.

JSON values are what `json.dumps` writes inside an object: strings through the
same C string encoder, ints by `int.__repr__`, anything else through the
encoder itself; each row is then one %-template with the keys built in.
"""

from __future__ import annotations

import csv
import io
import json
import operator
from collections.abc import Sequence
from typing import Any

from server.untrusted_text import FORMULA_STARTS, csv_cell, has_controls

Chunk = dict[str, list[Any]]
# json.dumps(value, ensure_ascii=False) is this encoder's encode(value); built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
# The string encoder json.dumps uses when ensure_ascii is off (the C one when available).
_encode_text = json.encoder.encode_basestring
_is_formula = operator.methodcaller("startswith", FORMULA_STARTS)
_NONE = type(None)


def csv_header(columns: Sequence[str]) -> str:
    return _csv_text([list(columns)])


def csv_rows(chunk: Chunk, columns: Sequence[str]) -> str:
    """The rows of `chunk` as CSV lines, `columns` in that order."""
    cells = [_csv_column(name, chunk[name]) for name in columns]
    return _csv_text(zip(*cells, strict=True))


def json_rows(chunk: Chunk) -> str:
    """The rows of `chunk` as JSON objects (keys in the chunk's order), comma-separated."""
    template = "{" + ", ".join(f"{_encode_text(name)}: %s" for name in chunk) + "}"
    values = [_json_column(column) for column in chunk.values()]
    return ",".join(map(template.__mod__, zip(*values, strict=True)))


def _csv_text(rows: Any) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()


def _csv_column(name: str, values: list[Any]) -> list[str]:
    kinds = set(map(type, values))
    if name not in ("evidence", "outcomes") and kinds <= {str, _NONE}:
        texts = ["" if value is None else value for value in values] if _NONE in kinds \
            else values
        if not has_controls("".join(texts)) and not any(map(_is_formula, texts)):
            return texts
    elif kinds == {int}:
        texts = list(map(str, values))
        if not any(map(_is_formula, texts)):
            return texts
    return [csv_cell(name, value) for value in values]


def _json_column(values: list[Any]) -> list[str]:
    kinds = set(map(type, values))
    if kinds == {str}:
        return list(map(_encode_text, values))
    if kinds == {str, _NONE}:
        return ["null" if value is None else _encode_text(value) for value in values]
    if kinds == {int}:
        return list(map(int.__repr__, values))
    return list(map(_ENCODER.encode, values))
