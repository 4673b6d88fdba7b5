"""Exceptions and the requests for them (docs/api.md, "Exceptions")."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, Field

from policies.catalog_model import APP_ID_PATTERN
from policies.exceptions import MAX_EXCEPTION_DAYS
from policies.vocabulary import ExceptionState, RequestStatus
from server.schemas.common import DEFAULT_LIMIT, Answer, Limit, Page, Query, TextFilter, Timestamp

_Reason = Field(min_length=1, max_length=4096, description="why; shown to reviewers and agents")
Days = Annotated[int, Field(ge=1, le=MAX_EXCEPTION_DAYS)]


class ExceptionGrant(Answer):
    """`POST /exceptions`: one of `host` and `group`."""

    app: str = Field(max_length=64, pattern=APP_ID_PATTERN, description="a catalog app id")
    host: str | None = Field(default=None, min_length=1, max_length=255,
                             description="an agent id, or the hostname of exactly one agent")
    group: str | None = Field(default=None, min_length=1, max_length=255,
                              description="every machine of this group")
    until: AwareDatetime = Field(description="RFC 3339 with a zone; in the future, at most "
                                             f"{MAX_EXCEPTION_DAYS} days ahead")
    reason: str = _Reason


class ExceptionView(Answer):
    id: int
    app: str
    agent_id: str | None = Field(description="the machine, for a machine's exception")
    hostname: str | None
    group: str | None = Field(description="the group, for a group's exception")
    until: Timestamp
    reason: str
    state: ExceptionState
    created_by: str
    created_at: Timestamp
    revoked_at: Timestamp | None
    revoked_by: str | None


class GrantAnswer(ExceptionView):
    merged: bool = Field(description="true: an exception in force for the same app and "
                                     "scope was extended instead of a new one made")


ExceptionPage = Page[ExceptionView]


class ExceptionListQuery(Query):
    state: ExceptionState | None = Field(default=None, description="any when absent")
    app: TextFilter = None
    host: TextFilter = Field(default=None, description="an agent id")
    group: TextFilter = None
    limit: Limit = DEFAULT_LIMIT


class RequestView(Answer):
    id: int
    agent_id: str
    hostname: str | None
    app: str
    days: int = Field(description="how long the person asked for")
    reason: str
    requested_by: str = Field(description="the account that asked, at the machine")
    requested_uid: int | None
    requested_at: Timestamp
    status: RequestStatus
    decided_by: str | None
    decided_at: Timestamp | None
    comment: str
    exception_id: int | None = Field(description="the exception an approval granted")


RequestPage = Page[RequestView]


class RequestListQuery(Query):
    status: RequestStatus | None = Field(default=None, description="any when absent")
    limit: Limit = DEFAULT_LIMIT


class Approval(Answer):
    days: Days | None = Field(default=None, description="the period granted; the asked-for "
                                                        "days when absent")
    comment: str = Field(default="", max_length=4096, description="told to the person")


class Denial(Answer):
    comment: str = Field(default="", max_length=4096, description="told to the person")
