"""Path parameters both doors of people share (the admin API and the dashboard)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from server.schemas.common import MAX_ROW_ID

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
