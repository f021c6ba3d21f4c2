"""The head-end's invocation counters towards each meter, kept in the store between sessions.

With ciphering, the IV of every APDU is (system title, invocation counter): reusing a counter under the
same key breaks AES-GCM, so meters refuse any counter they have already seen from a client. A head-end
that started each session at 1 would be locked out after its first session (and would weaken the
cipher if it were not). So each session *reserves* a block of counters before it starts (the store then
holds ``start + SESSION_BLOCK``) and gives back what it did not use when it ends (the store holds
``last used + 1``). A crash in between only wastes the block; two head-end instances can never hand out
the same counter, because the reservation is one transaction on the row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import Engine, insert, update
from sqlalchemy.exc import IntegrityError

from openami.store.schema import dlms_counter

__all__ = ["SESSION_BLOCK", "CounterStore"]

SESSION_BLOCK: Final = 1_000_000
"""Counters a session may use. A session never sends this many APDUs (a firmware image of 100 MB in
200-byte blocks would), and at one wasted block per crash the 32-bit counter lasts 4000 crashes."""


class CounterStore:
    """Reserves and returns blocks of counters per (meter, head-end system title). Blocking calls."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def reserve(self, tenant_id: int, meter_id: int, client_title: bytes) -> int:
        """The first counter this session may use; the next ``SESSION_BLOCK`` are its own.

        One ``UPDATE ... RETURNING`` moves the row past the block, so concurrent sessions (threads or
        head-end instances) serialise on the row on every database, SQLite included.
        """
        title = client_title.hex().upper()
        row = (dlms_counter.c.meter_id == meter_id) & (dlms_counter.c.client_title == title)
        for _ in range(3):  # a concurrent first reservation may win the insert: take the update path
            try:
                with self._engine.begin() as conn:
                    reserved = conn.execute(
                        update(dlms_counter)
                        .where(row)
                        .values(
                            next_value=dlms_counter.c.next_value + SESSION_BLOCK, updated_at=datetime.now(UTC)
                        )
                        .returning(dlms_counter.c.next_value)
                    ).scalar_one_or_none()
                    if reserved is not None:
                        return int(reserved) - SESSION_BLOCK
                    conn.execute(
                        insert(dlms_counter).values(
                            tenant_id=tenant_id,
                            meter_id=meter_id,
                            client_title=title,
                            next_value=1 + SESSION_BLOCK,
                            updated_at=datetime.now(UTC),
                        )
                    )
                    return 1
            except IntegrityError:
                continue  # rolled back: the row exists now, so the next pass updates it
        raise RuntimeError(f"could not reserve DLMS counters for meter {meter_id}")

    def release(self, meter_id: int, client_title: bytes, start: int, last_used: int | None) -> None:
        """Give back the unused part of the block reserved at ``start`` (nothing if another session has
        reserved since: its block lies above this one, so lowering the row would hand counters out twice)."""
        title = client_title.hex().upper()
        following = start if last_used is None else last_used + 1
        with self._engine.begin() as conn:
            conn.execute(
                update(dlms_counter)
                .where(
                    dlms_counter.c.meter_id == meter_id,
                    dlms_counter.c.client_title == title,
                    dlms_counter.c.next_value == start + SESSION_BLOCK,
                )
                .values(next_value=following, updated_at=datetime.now(UTC))
            )
