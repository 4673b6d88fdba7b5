"""A chunk of export rows (server.store.export_rows) as CSV or JSON text, column by column.

The bytes are exactly those of the per-row writers the exports had: each CSV
cell is `server.untrusted_text.csv_cell(name, value)` and each JSON row is
`json.dumps(item, ensure_ascii=False)` of the API shape. At 120,000 rows a
Python call per cell (26 a row) was most of the time, so each column is
converted by one call mapped over it, then checked at once: one search for a
control character in the whole column and one for a cell that starts like a
formula; only when either is found (rare) do its cells go through `csv_text`
one by one. Values of a type no fast path knows go through `csv_cell`.

JSON values are what `json.dumps` writes inside an object: strings through the
same C string encoder, ints by `int.__repr__`, anything else (evidence,
outcomes) through an encoder built once, called once per column (`_encoded`);
each row is then one %-template with the keys built in.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from typing import Any

from server.untrusted_text import (
    FORMULA_STARTS,
    JSON_CELLS,
    csv_cell,
    csv_text,
    has_controls,
)

Chunk = dict[str, list[Any]]
# json.dumps(value, ensure_ascii=False) is this encoder's encode(value); built once.
_ENCODER = json.JSONEncoder(ensure_ascii=False)
# And json.dumps(value, sort_keys=True, ensure_ascii=False), csv_cell's JSON cells.
_SORTED_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True)
_JSON_KINDS = frozenset({dict, list, str, int, float, bool, type(None)})
# The string encoder json.dumps uses when ensure_ascii is off (the C one when available).
_encode_text = json.encoder.encode_basestring
_FORMULA_LINE = re.compile("\n[" + re.escape("".join(FORMULA_STARTS)) + "]")
_NONE = type(None)
_ONLY_NULL = {_NONE}
_ONLY_LISTS = {list}


def csv_header(columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(columns)
    return buffer.getvalue()


def csv_rows(chunk: Chunk, columns: Sequence[str]) -> str:
    """The rows of `chunk` as CSV lines, `columns` in that order, as `csv.writer` writes
    them (excel dialect: minimal quoting, CRLF). Its writerows cost as much as the rest
    together, so the quoting is done a column at a time and the rows joined."""
    cells = [_quoted(_csv_column(name, chunk[name])) for name in columns]
    return "\r\n".join(map(",".join, zip(*cells, strict=True))) + "\r\n"


def json_rows(chunk: Chunk) -> str:
    """The rows of `chunk` as JSON objects (keys in the chunk's order), comma-separated."""
    template = "{" + ", ".join(f"{_encode_text(name)}: %s" for name in chunk) + "}"
    values = [_json_column(column) for column in chunk.values()]
    return ",".join(map(template.__mod__, zip(*values, strict=True)))


def _quoted(texts: list[str]) -> list[str]:
    # Cells reach here made safe (csv_text): no CR or LF in any, so only a comma or a quote
    # makes csv.writer quote one (doubling its quotes). Rows have many cells, so the writer's
    # special case of a lone empty cell does not arise.
    joined = "".join(texts)
    if '"' not in joined and "," not in joined:
        return texts
    return [f'"{text.replace(chr(34), chr(34) * 2)}"' if '"' in text or "," in text else text
            for text in texts]


def _csv_column(name: str, values: list[Any]) -> list[str]:
    kinds = set(map(type, values))
    if kinds == _ONLY_NULL:  # a column nobody filled in yet (triage): no cell to check
        return [""] * len(values)
    if kinds == _ONLY_LISTS and not any(values):  # no outcome yet: every value []
        return ["[]"] * len(values)
    # csv_cell writes JSON for these names, and for any dict or list.
    if kinds <= _JSON_KINDS and (name in JSON_CELLS or kinds <= {dict, list, _NONE}):
        texts = _encoded(_SORTED_ENCODER, values)
        if _NONE in kinds:
            texts = ["" if value is None else text
                     for value, text in zip(values, texts, strict=True)]
    elif kinds <= {str, _NONE} and name not in JSON_CELLS:
        texts = ["" if value is None else value for value in values] if _NONE in kinds \
            else values
    elif kinds == {int} and name not in JSON_CELLS:
        texts = list(map(str, values))
    else:
        return [csv_cell(name, value) for value in values]
    return _safe(texts)


def _safe(texts: list[str]) -> list[str]:
    """`csv_text` of each: `texts` themselves unless one holds a control character or starts
    like a formula (rare), checked over the whole column at once."""
    if has_controls("".join(texts)):
        return list(map(csv_text, texts))
    # No controls, so no newline in a cell (a safe separator) and no tab or CR start.
    if _FORMULA_LINE.search("\n" + "\n".join(texts)):
        return list(map(csv_text, texts))
    return texts


def _json_column(values: list[Any]) -> list[str]:
    kinds = set(map(type, values))
    if kinds == _ONLY_NULL:
        return ["null"] * len(values)
    if kinds == _ONLY_LISTS and not any(values):  # no outcome yet: every value []
        return ["[]"] * len(values)
    if kinds == {str}:
        return list(map(_encode_text, values))
    if kinds == {str, _NONE}:
        return ["null" if value is None else _encode_text(value) for value in values]
    if kinds == {int}:
        return list(map(int.__repr__, values))
    return _encoded(_ENCODER, values)


def _encoded(encoder: json.JSONEncoder, values: list[Any]) -> list[str]:
    """`encoder.encode(value)` of each value, from one call for the whole column: a call per
    value (240,000 in an export of findings) cost more than the encoding itself.

    The values are encoded as one list with a marker string between each two, then split
    at the markers. The split is exact when it gives one text per value: an encoded value
    cannot end partway into a marker (a marker starts with `, "` and holds no quote), so
    each real marker is found, and a value that holds the marker's text adds pieces."""
    if len(values) < 2:
        return list(map(encoder.encode, values))
    spaced = [_MARK] * (2 * len(values) - 1)
    spaced[::2] = values
    texts = encoder.encode(spaced)[1:-1].split(_MARKED)
    if len(texts) != len(values):
        return list(map(encoder.encode, values))
    return texts


_MARK = "\x00warden:export:cell\x00"
# How both encoders write it between two items of a list (item separator ", ").
_MARKED = ", " + _ENCODER.encode(_MARK) + ", "
