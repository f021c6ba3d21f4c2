"""Opaque bearer tokens, stored only as their SHA-256.

A token is 32 random bytes (``secrets.token_urlsafe``), handed to the client once. The database keeps
``sha256(token)``: a leaked database or backup yields no usable token, and because the token has 256 bits
of entropy a plain (unsalted, fast) hash is enough, unlike passwords. Looking a token up by its hash
through a unique index also avoids comparing secrets byte by byte in Python.

Kinds: ``session`` (login, browser cookie or bearer; lives ``token_ttl_hours``) and ``api`` (named
machine tokens). Both can be revoked; ``last_used_at`` is refreshed at most once a minute so a busy
client does not turn every read into a write.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Connection, or_

from openami.store.schema import api_token

TokenKind = Literal["session", "api"]

#: How stale ``last_used_at`` may get before a request refreshes it.
TOUCH_INTERVAL = timedelta(minutes=1)
#: Anything longer is not one of our tokens; refuse it before hashing.
MAX_TOKEN_LENGTH = 256


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly issued token; ``token`` is the only copy of the secret and is never stored."""

    token: str
    token_id: int
    kind: TokenKind
    expires_at: datetime


def generate_token() -> str:
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The stored form of a token (64 hex characters)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def plausible_token(token: str) -> bool:
    """Cheap pre-check: bounded length, URL-safe characters only."""
    return 0 < len(token) <= MAX_TOKEN_LENGTH and token.isascii() and token.isprintable()


def issue_token(
    conn: Connection, user_id: int, kind: TokenKind, ttl: timedelta, *, now: datetime, name: str = ""
) -> IssuedToken:
    """Create a token for ``user_id`` valid for ``ttl`` from ``now``."""
    token = generate_token()
    expires_at = now + ttl
    token_id = conn.execute(
        api_token.insert()
        .values(
            user_id=user_id, token_hash=hash_token(token), kind=kind, name=name[:120], expires_at=expires_at
        )
        .returning(api_token.c.id)
    ).scalar_one()
    return IssuedToken(token=token, token_id=token_id, kind=kind, expires_at=expires_at)


def revoke_token(conn: Connection, token: str, *, now: datetime) -> bool:
    """Revoke one token; False when it was unknown or already revoked."""
    result = conn.execute(
        api_token.update()
        .where(api_token.c.token_hash == hash_token(token), api_token.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return result.rowcount > 0


def touch_token(conn: Connection, token_id: int, *, now: datetime) -> None:
    """Record use of a token, unless it was already recorded within ``TOUCH_INTERVAL``."""
    conn.execute(
        api_token.update()
        .where(
            api_token.c.id == token_id,
            or_(api_token.c.last_used_at.is_(None), api_token.c.last_used_at < now - TOUCH_INTERVAL),
        )
        .values(last_used_at=now)
    )
