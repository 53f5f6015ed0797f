"""Cursor pagination: every list answers `{"items": [...], "next_cursor": ...}`.

Ids are time-ordered UUIDs, so the cursor is simply the last id of the page.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class PageParams:
    def __init__(
        self,
        limit: Annotated[int, Query(ge=1, le=1000, description="Items per page")] = 100,
        cursor: Annotated[uuid.UUID | None, Query(description="`next_cursor` of the previous page")] = None,
    ) -> None:
        # A cursor is the last id of the previous page: typed as such, so the document says so and a
        # malformed one is refused like any other bad parameter (422, naming `cursor`).
        self.limit = limit
        self.after = cursor


def keyset(query: Select, id_column: Any, *, after: uuid.UUID | None, limit: int) -> Select:
    """One page of `query` after the cursor, fetching one extra row to know if another page follows."""
    query = query.order_by(id_column).limit(limit + 1)
    return query.where(id_column > after) if after is not None else query


def next_cursor(rows: list, limit: int) -> str | None:
    """The cursor for the page after `rows`, which was fetched with limit + 1."""
    return str(rows[limit - 1].id) if len(rows) > limit else None
