"""Text that came from endpoints, made safe to put in logs, chat messages and spreadsheets.

Process names, command lines, paths and host names are chosen by whoever runs
a program on an agent's machine. Written verbatim, a NUL or an escape sequence
reaches a syslog collector or a terminal that shows the log (ESC [ can rewrite
what is on screen), a newline forges a second log line, and a bidi override
makes a path read backwards. Here each such character becomes a visible
escape in JSON's form (`\\u001b`, `\\u202e`), and a CSV cell that a spreadsheet would run as a
formula gets a leading quote (OWASP "CSV injection").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

# C0 and C1 controls and DEL; line and paragraph separators; bidi embeddings, overrides
# and isolates (the "Trojan Source" characters).
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Spreadsheets run a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Cells written as JSON text whatever their value.
JSON_CELLS = frozenset({"evidence", "outcomes"})


def _escape(match: re.Match[str]) -> str:
    # JSON's form, so an escaped JSON text is still JSON (and reads the same elsewhere).
    return f"\\u{ord(match.group()):04x}"


def has_controls(text: str) -> bool:
    """Whether `escape_controls` would change `text`."""
    if text.isascii():
        # Most text is ASCII, and there the controls are the bytes left once the printable
        # ones are dropped: bytes.translate does that in C several times faster than the
        # regex searches (the exports check 40 MB of cells).
        return bool(text.encode().translate(None, _PRINTABLE_ASCII))
    return _CONTROLS.search(text) is not None


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def escape_controls(text: str) -> str:
    """`text` with every control character written as a visible escape."""
    return _CONTROLS.sub(_escape, text)


def one_line(text: str) -> str:
    """Runs of whitespace as one space, then any control character left escaped."""
    return escape_controls(" ".join(text.split()))


def csv_cell(name: str, value: Any) -> str:
    """One finding field as a CSV cell: evidence as JSON, controls escaped, no formula."""
    if value is None:
        return ""
    if name in JSON_CELLS or isinstance(value, dict | list):
        # JSON escapes C0 controls itself, not C1 or bidi ones: those are escaped below.
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    else:
        text = str(value)
    return csv_text(text)


def csv_text(text: str) -> str:
    """Text as a CSV cell: controls escaped, and a leading quote if a spreadsheet would
    take it for a formula."""
    text = escape_controls(text)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def replace_controls(text: str, replace: Callable[[str], str]) -> str:
    """`text` with each control character (the set `escape_controls` escapes) replaced by
    `replace(character)`: for formats with their own escapes (CEF writes a newline `\\n`)."""
    return _CONTROLS.sub(lambda match: replace(match.group()), text)
