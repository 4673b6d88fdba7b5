"""The declarative base every table shares, and the JSON column type."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

from server.db import UTCDateTime

# JSONB on PostgreSQL (comparable, indexable); JSON text on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")



class Base(DeclarativeBase):
    # Names as the migrations spell them, so models and schema compare equal.
    metadata = sa.MetaData(naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
    })
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSONType}
