"""Pages and opaque cursors.

Lists are keyset-paginated: a page carries ``next_cursor`` when more may follow, and the client passes
it back unchanged as ``cursor``. Cursors are opaque (URL-safe base64 of a tagged value) so clients do not
build them and the encoding can change; a cursor for one kind of list is refused by another.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from openami.api.problems import Problem
from openami.store.repositories import DEFAULT_LIMIT, MAX_LIMIT

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    """One page of a list; ``next_cursor`` is null on the last page."""

    items: list[T]
    next_cursor: str | None = None


class ListQuery(BaseModel):
    """Query parameters every list accepts; resource lists add their filters to this model."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(
        DEFAULT_LIMIT, ge=1, description=f"Page size; larger values are capped at {MAX_LIMIT}."
    )
    cursor: str | None = Field(None, max_length=200, description="next_cursor of the previous page.")


def _encode(tag: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{tag}:{value}".encode()).decode().rstrip("=")


def _decode(tag: str, cursor: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise Problem(422, "invalid cursor", slug="invalid-cursor") from None
    found, _, value = raw.partition(":")
    if found != tag:
        raise Problem(422, "invalid cursor", slug="invalid-cursor")
    return value


def id_cursor(last_id: int) -> str:
    return _encode("id", str(last_id))


def after_id(cursor: str | None) -> int | None:
    """The last id of the previous page, from a cursor made by ``id_cursor``."""
    if cursor is None:
        return None
    value = _decode("id", cursor)
    if not value.isdigit() or len(value) > 19:
        raise Problem(422, "invalid cursor", slug="invalid-cursor")
    return int(value)


def ts_cursor(last_ts: datetime) -> str:
    return _encode("ts", last_ts.isoformat())


def after_ts(cursor: str | None) -> datetime | None:
    """The last timestamp of the previous page, from a cursor made by ``ts_cursor``."""
    if cursor is None:
        return None
    try:
        value = datetime.fromisoformat(_decode("ts", cursor))
    except ValueError:
        raise Problem(422, "invalid cursor", slug="invalid-cursor") from None
    if value.tzinfo is None:
        raise Problem(422, "invalid cursor", slug="invalid-cursor")
    return value
