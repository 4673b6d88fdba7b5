"""Who did something, for people: "alice", not `user:1:alice`.

The audit log and the records keep the precise actor (`user:ID:NAME`,
`token:ID:NAME`, `cli:LOGIN`, `system`) so that a renamed account or a reused
name cannot blur who it was; pages, API answers and the CLI show the name.
"""

from __future__ import annotations


def actor_name(actor: str | None) -> str | None:
    """`user:1:alice` -> `alice`; `token:3:ci` -> `ci (API token)`; `cli:root` -> `root (on
    the server)`; anything else as it is."""
    if actor is None:
        return None
    kind, _, rest = actor.partition(":")
    if kind in ("user", "token"):
        number, sep, name = rest.partition(":")
        if sep and number.isdigit() and name:
            return name if kind == "user" else f"{name} (API token)"
    if kind == "cli" and rest:
        return f"{rest} (on the server)"
    return actor
