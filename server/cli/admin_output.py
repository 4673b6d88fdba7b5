"""How the admin commands print: tables, readable JSON objects and one-line errors."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from policies.errors import ValidationIssue
from server.api_client import ApiError
from server.cli.credentials import config_path

EXIT_API = 1
EXIT_USAGE = 2

# A column of a table of answers: its header, and how to read its cell from one answer.
Column = tuple[str, Callable[[Any], object]]

_STATUS_HINTS = {
    401: "check the token: --token, WARDEN_TOKEN or {config}",
    403: "this token's role may not do that (policies, agents, secrets and tokens need "
         "admin; triage needs analyst)",
}


def fail(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def api_failure(exc: ApiError) -> int:
    hint = _STATUS_HINTS.get(exc.status, "").format(config=config_path())
    print(f"error: {exc}" + (f": {hint}" if hint else ""), file=sys.stderr)
    # Validation issues (a rejected policy) are listed the way `policy validate` does.
    for detail in exc.details if isinstance(exc.details, list) else []:
        print(f"error: {_detail(detail)}", file=sys.stderr)
    return EXIT_API


def _detail(detail: object) -> str:
    if isinstance(detail, dict) and {"file", "message"} <= detail.keys():
        return str(ValidationIssue(str(detail["file"]), detail.get("line"),
                                   str(detail.get("field") or ""), str(detail["message"]),
                                   str(detail.get("hint") or "")))
    if isinstance(detail, dict) and "msg" in detail:  # FastAPI's request validation shape
        where = ".".join(str(part) for part in detail.get("loc", []))
        return f"{where}: {detail['msg']}" if where else str(detail["msg"])
    return detail if isinstance(detail, str) else json.dumps(detail)


def as_json(answer: BaseModel) -> dict[str, Any]:
    """An answer as the server sent it (its field names, JSON values; no field the server
    did not send, such as one an older server does not know)."""
    return answer.model_dump(mode="json", by_alias=True, exclude_unset=True)


def show(args: argparse.Namespace, items: Sequence[BaseModel], empty: str,
         columns: Sequence[Column]) -> int:
    if args.json:
        print(json.dumps({"items": [as_json(item) for item in items]}, indent=2))
    elif not items:
        print(empty, file=sys.stderr)
    else:
        print(table(items, columns))
    return 0


def table(rows: Sequence[Any], columns: Sequence[Column]) -> str:
    cells = [[header for header, _ in columns]]
    cells += [[cell(get(row)) for _, get in columns] for row in rows]
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                        strict=True)).rstrip()
                     for line in cells)


def cell(value: object) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return " ".join(str(value).split())


def when(value: object) -> object:
    """RFC 3339 from the server, shown to the second in UTC; anything else as it came."""
    if not isinstance(value, str):
        return value
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S") + ("Z" if when.tzinfo else "")


def render(value: dict[str, Any], indent: str = "") -> None:
    """A JSON object for people: scalars as `key: value`, lists of objects as tables."""
    for key, item in value.items():
        if isinstance(item, dict):
            print(f"{indent}{key}:")
            render(item, indent + "  ")
        elif isinstance(item, list) and item and all(isinstance(row, dict) for row in item):
            print(f"{indent}{key}:")
            names = list(dict.fromkeys(name for row in item for name in row))
            columns = [(name.upper(), _getter(name)) for name in names]
            for line in table(item, columns).splitlines():
                print(f"{indent}  {line}")
        elif isinstance(item, list):
            print(f"{indent}{key}: {', '.join(cell(x) for x in item) if item else '-'}")
        else:
            print(f"{indent}{key}: {cell(item)}")


def _getter(name: str) -> Callable[[dict[str, Any]], object]:
    return lambda row: row.get(name)
