"""Exceptions: an administrator's signed word that one machine may run a denied app until a
time, and the answers to requests for one. The wire format both sides build and read.

The server signs one document per agent (`ExceptionsDocument`) with the policy-signing
key and sends it in every check-in answer; the agent verifies it with the key it pins
for policies, keeps it, and decides on its own clock which exceptions still hold
(`in_force`), so an exception lapses on time even when the server is unreachable.
Pure: no I/O, no clock of its own; the time is always given.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from policies.catalog_model import APP_ID_PATTERN

# What the signed document says it is, so it can never pass for a bundle, an activation
# or a key rotation signed with the same key.
EXCEPTIONS_PURPOSE: Final = "warden.exceptions"
# The longest an exception (or a request) may run: a year.
MAX_EXCEPTION_DAYS = 365
# How long before an exception lapses the person at the machine is told.
WARN_BEFORE = dt.timedelta(days=1)


def _not_a_bool(value: Any) -> Any:
    # JSON `true` is no number, whatever pydantic's lax mode would take.
    if isinstance(value, bool):
        raise ValueError("must be a number")
    return value


# An integer in the JSON sense: 30 or 30.0, never `true` or "30".
Integer = Annotated[int, BeforeValidator(_not_a_bool)]


class _Wire(BaseModel):
    # A newer server may add fields: an older agent reads what it knows.
    model_config = ConfigDict(extra="ignore", frozen=True)


class GrantedException(_Wire):
    id: int = Field(description="the exception's id on the server")
    app: str = Field(max_length=64, pattern=APP_ID_PATTERN)
    until: AwareDatetime = Field(description="when it lapses, by the agent's own clock")
    reason: str = Field(max_length=4096)


class RequestAnswer(_Wire):
    """An administrator's decision on a request this machine sent."""

    request_id: str = Field(description="the id the agent gave the request (its event id)")
    app: str = Field(max_length=64, pattern=APP_ID_PATTERN)
    decision: Literal["approved", "denied"]
    until: AwareDatetime | None = Field(default=None, description="approved: until when")
    comment: str = Field(default="", max_length=4096)
    user: str = Field(default="", max_length=255, description="who asked, at the machine")


class ExceptionsDocument(_Wire):
    purpose: Literal["warden.exceptions"] = EXCEPTIONS_PURPOSE
    agent_id: str = Field(description="the agent it is for: no other agent takes it")
    issued_at: AwareDatetime = Field(description="an agent never goes back to an older one")
    exceptions: list[GrantedException] = Field(default_factory=list)
    answers: list[RequestAnswer] = Field(default_factory=list)


class SignedExceptions(BaseModel):
    """In the check-in answer: the document exactly as signed, and its signature."""

    document: dict[str, Any] = Field(
        description="an ExceptionsDocument: {\"purpose\": \"warden.exceptions\", "
                    "\"agent_id\", \"issued_at\", \"exceptions\", \"answers\"}")
    signature: str = Field(description="Ed25519 by the policy-signing key over the "
                                       "document's canonical JSON, base64")


class ExceptionRequestInfo(_Wire):
    """What an `exception_requested` event carries: a person's request at a machine."""

    app: str = Field(max_length=64, pattern=APP_ID_PATTERN)
    days: Integer = Field(ge=1, le=MAX_EXCEPTION_DAYS)
    reason: str = Field(min_length=1, max_length=4096)
    user: str = Field(default="", max_length=255, description="who asked (the peer's account)")
    uid: Integer | None = Field(default=None,
                                description="the peer's user id (SO_PEERCRED)")


def in_force(exceptions: list[GrantedException], now: dt.datetime) -> dict[str, dt.datetime]:
    """App -> until, for the exceptions that hold at `now` (the latest when several)."""
    held: dict[str, dt.datetime] = {}
    for exception in exceptions:
        if exception.until > now and exception.until > held.get(exception.app, now):
            held[exception.app] = exception.until
    return held


def next_change(exceptions: list[GrantedException], now: dt.datetime) -> dt.datetime | None:
    """The next moment something is due: an exception lapses, or its warning is."""
    moments = [moment for exception in exceptions
               for moment in (exception.until - WARN_BEFORE, exception.until) if moment > now]
    return min(moments, default=None)
