"""Invocation counters towards meters: reserved per session, given back, never handed out twice."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, insert, select

from openami.hes.dlms_counters import SESSION_BLOCK, CounterStore
from openami.store.schema import dlms_counter, meter, tenant

TITLE = b"OPENAMI1"


def _meter(engine: Engine) -> tuple[int, int]:
    with engine.begin() as conn:
        tenant_id = conn.execute(
            insert(tenant).values(slug="ic", name="IC", timezone="UTC").returning(tenant.c.id)
        ).scalar_one()
        meter_id = conn.execute(
            insert(meter)
            .values(tenant_id=tenant_id, serial="M1", medium="electricity", protocol="dlms")
            .returning(meter.c.id)
        ).scalar_one()
    return tenant_id, meter_id


def _stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(dlms_counter.c.next_value)).scalar_one())


def test_sessions_continue_above_the_last_used_counter(engine: Engine) -> None:
    tenant_id, meter_id = _meter(engine)
    store = CounterStore(engine)
    first = store.reserve(tenant_id, meter_id, TITLE)
    assert first == 1
    assert _stored(engine) == 1 + SESSION_BLOCK  # a crash now wastes the block, never reuses it
    store.release(meter_id, TITLE, first, last_used=7)
    assert _stored(engine) == 8
    assert store.reserve(tenant_id, meter_id, TITLE) == 8
    assert store.reserve(tenant_id, meter_id, b"OTHERHES") == 1  # counters are per head-end title


def test_a_late_release_never_lowers_a_newer_reservation(engine: Engine) -> None:
    tenant_id, meter_id = _meter(engine)
    store = CounterStore(engine)
    first = store.reserve(tenant_id, meter_id, TITLE)
    second = store.reserve(tenant_id, meter_id, TITLE)
    assert second == first + SESSION_BLOCK
    store.release(meter_id, TITLE, first, last_used=3)  # the older session ends after the newer began
    assert _stored(engine) == second + SESSION_BLOCK
    store.release(meter_id, TITLE, second, last_used=None)
    assert _stored(engine) == second


def test_concurrent_reservations_get_disjoint_blocks(engine: Engine) -> None:
    tenant_id, meter_id = _meter(engine)
    store = CounterStore(engine)
    starts: list[int] = []
    lock = threading.Lock()

    def reserve() -> None:
        for _ in range(5):
            start = store.reserve(tenant_id, meter_id, TITLE)
            with lock:
                starts.append(start)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(starts) == [1 + i * SESSION_BLOCK for i in range(20)]
