"""The tamper-evident audit log: one SHA-256 hash chain per tenant.

Each entry stores ``prev_hash`` (the hash of the tenant's previous entry, or 64 zeros for the first) and
``hash = sha256(prev_hash + canonical JSON of the entry)``. Database triggers already refuse UPDATE and
DELETE on ``audit_log``; the chain additionally makes rows inserted behind our back, or edits made with
the triggers dropped, detectable by ``verify_chain``. Chains are per tenant (platform-level entries,
``tenant_id`` NULL, form their own chain) so a tenant's log can be exported and verified without anyone
else's rows.

Appending must read the chain's last hash and insert the next entry without another writer slipping in
between, or two entries would share a ``prev_hash`` and fork the chain. PostgreSQL: a transaction-scoped
advisory lock per chain, taken before reading the last hash and released at commit. SQLite: a no-op
write first, which takes the database's single write lock for the rest of the caller's transaction
(the same effect as BEGIN IMMEDIATE, without having to own the BEGIN).

``append`` takes the caller's connection, so a mutation and its audit entry commit or roll back together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, select, text

from openami.store.schema import audit_log
from openami.store.types import to_utc

GENESIS_HASH = "0" * 64
#: Advisory lock keys of audit chains: this base plus the tenant id (0 for the platform chain).
_PG_LOCK_BASE = 0x4F414D49 << 32  # "OAMI"
_MAX = {"actor": 160, "action": 64, "target_type": 32, "target_id": 64}


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    tenant_id: int | None
    ts: datetime
    actor: str
    action: str
    target_type: str | None
    target_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the same bytes for the same content on every run and dialect.

    Values JSON does not know (datetimes, Decimals) are written as their ``str``; ``append`` stores the
    detail in this normalised form so what is hashed is exactly what is read back.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def entry_hash(
    prev_hash: str,
    *,
    tenant_id: int | None,
    ts: datetime,
    actor: str,
    action: str,
    target_type: str | None,
    target_id: str | None,
    detail: Mapping[str, Any],
) -> str:
    """The hash of an entry given its predecessor's hash."""
    body = {
        "tenant_id": tenant_id,
        "ts": to_utc(ts).isoformat(),
        "actor": actor,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "detail": detail,
    }
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(body)).hexdigest()


def _chain(tenant_id: int | None) -> ColumnElement[bool]:
    return audit_log.c.tenant_id.is_(None) if tenant_id is None else audit_log.c.tenant_id == tenant_id


def _lock_chain(conn: Connection, tenant_id: int | None) -> None:
    """Hold the chain's write lock until the caller's transaction ends (see the module docstring)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_BASE + (tenant_id or 0)})
    else:
        conn.execute(text("UPDATE audit_log SET hash = hash WHERE 0 = 1"))


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """Appends entries to the per-tenant hash chains; ``clock`` is injectable for tests."""

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        self._clock = clock

    def append(
        self,
        conn: Connection,
        tenant_id: int | None,
        actor: str,
        action: str,
        target_type: str | None = None,
        target_id: object = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Add an entry inside the caller's transaction; ``target_id`` is stored as text."""
        fields: dict[str, Any] = {
            "tenant_id": tenant_id,
            "ts": self._clock(),
            "actor": actor[: _MAX["actor"]],
            "action": action[: _MAX["action"]],
            "target_type": None if target_type is None else target_type[: _MAX["target_type"]],
            "target_id": None if target_id is None else str(target_id)[: _MAX["target_id"]],
            "detail": json.loads(canonical_json(dict(detail or {}))),
        }
        _lock_chain(conn, tenant_id)
        last = conn.execute(
            select(audit_log.c.hash).where(_chain(tenant_id)).order_by(audit_log.c.id.desc()).limit(1)
        ).scalar_one_or_none()
        prev_hash = last or GENESIS_HASH
        digest = entry_hash(prev_hash, **fields)
        row_id = conn.execute(
            audit_log.insert().values(**fields, prev_hash=prev_hash, hash=digest).returning(audit_log.c.id)
        ).scalar_one()
        return AuditEntry(id=row_id, prev_hash=prev_hash, hash=digest, **fields)


def verify_chain(engine: Engine, tenant_id: int | None = None) -> tuple[bool, int | None]:
    """Check every chain (or only ``tenant_id``'s); ``(True, None)`` or ``(False, first bad entry id)``.

    An entry is bad when its ``prev_hash`` is not its chain predecessor's hash or its ``hash`` does not
    match its content. Rows are streamed in id order, so memory stays flat on long logs.
    """
    query = select(audit_log).order_by(audit_log.c.id)
    if tenant_id is not None:
        query = query.where(audit_log.c.tenant_id == tenant_id)
    last_hash: dict[int | None, str] = {}
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=1000).execute(query):
            expected_prev = last_hash.get(row.tenant_id, GENESIS_HASH)
            recomputed = entry_hash(
                row.prev_hash,
                tenant_id=row.tenant_id,
                ts=row.ts,
                actor=row.actor,
                action=row.action,
                target_type=row.target_type,
                target_id=row.target_id,
                detail=row.detail,
            )
            if row.prev_hash != expected_prev or row.hash != recomputed:
                return False, int(row.id)
            last_hash[row.tenant_id] = row.hash
    return True, None
