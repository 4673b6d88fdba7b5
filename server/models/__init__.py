"""The server's tables, as SQLAlchemy 2.0 declarative models.

The schema itself is created by the Alembic migrations in server/migrations/;
these classes must describe the same tables (a test compares them).
Timestamps are aware UTC datetimes on both SQLite and PostgreSQL (see
`server.db.UTCDateTime`). `group` and `user` are reserved words in SQL; the
columns keep those names because SQLAlchemy quotes them — quote them yourself
in hand-written SQL.
"""

from policies.vocabulary import FINDING_STATUSES, ROLES, TRIAGE_STATES
from server.models.base import Base, JSONType
from server.models.fleet import (
    Agent,
    ApiToken,
    AuditEntry,
    EnrollSecret,
    Event,
    Finding,
    PolicyVersion,
    ReenrollmentRequest,
    ServerState,
    User,
)
from server.models.review import (
    AppException,
    ComplianceSnapshot,
    ExceptionRequest,
    Violation,
)
from server.models.shared import (
    Connector,
    RevokedSession,
    ThrottleFailures,
)

__all__ = [
    "FINDING_STATUSES",
    "ROLES",
    "TRIAGE_STATES",
    "Agent",
    "ApiToken",
    "AppException",
    "AuditEntry",
    "Base",
    "ComplianceSnapshot",
    "Connector",
    "EnrollSecret",
    "Event",
    "ExceptionRequest",
    "Finding",
    "JSONType",
    "PolicyVersion",
    "ReenrollmentRequest",
    "RevokedSession",
    "ServerState",
    "ThrottleFailures",
    "User",
    "Violation",
]
