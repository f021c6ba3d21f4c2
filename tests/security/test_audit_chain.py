"""The audit log's hash chains: they verify, tampering is found, and concurrent appends do not fork them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from openami.security.audit import GENESIS_HASH, AuditLog, entry_hash, verify_chain
from openami.store import repositories as repo
from openami.store.schema import audit_log, customer


def _tenants(engine: Engine, *slugs: str) -> list[int]:
    with engine.begin() as conn:
        return [repo.tenants.create(conn, {"slug": s, "name": s}).id for s in slugs]


def test_chains_verify_per_tenant(engine: Engine) -> None:
    a, b = _tenants(engine, "a", "b")
    log = AuditLog()
    with engine.begin() as conn:
        first = log.append(conn, a, "user:1:alice", "meter.create", "meter", 7, {"serial": "Ä-1", "n": 1.5})
        log.append(
            conn, b, "user:2:bob", "meter.create", "meter", 8, {"when": datetime(2026, 1, 1, tzinfo=UTC)}
        )
        log.append(conn, None, "system", "tenant.create", "tenant", a)
        second = log.append(conn, a, "user:1:alice", "meter.update", "meter", 7)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash  # b's and the platform's entries are other chains
    assert verify_chain(engine) == (True, None)
    assert verify_chain(engine, a) == (True, None)
    with engine.connect() as conn:
        stored = conn.execute(select(audit_log).where(audit_log.c.id == first.id)).one()
    assert stored.detail == {"serial": "Ä-1", "n": 1.5}
    assert stored.hash == first.hash


def test_rows_inserted_behind_the_logs_back_are_detected(engine: Engine) -> None:
    a, b = _tenants(engine, "a", "b")
    log = AuditLog()
    with engine.begin() as conn:
        for n in range(3):
            log.append(conn, a, "user:1:alice", "customer.create", "customer", n)
        last_b = log.append(conn, b, "user:2:bob", "customer.create", "customer", 1)
    ts = datetime.now(UTC)
    forged = {
        "tenant_id": b,
        "ts": ts,
        "actor": "mallory",
        "action": "customer.delete",
        "target_type": None,
        "target_id": None,
        "detail": {},
    }
    with engine.begin() as conn:
        # A forger who links correctly but cannot make the hash match the content...
        bad_id = conn.execute(
            audit_log.insert()
            .values(**forged, prev_hash=last_b.hash, hash="f" * 64)
            .returning(audit_log.c.id)
        ).scalar_one()
    assert verify_chain(engine) == (False, bad_id)
    assert verify_chain(engine, b) == (False, bad_id)
    assert verify_chain(engine, a) == (True, None)  # a's chain is untouched

    # ...and one who computes a valid hash but cannot know the right predecessor (a fork).
    c = _tenants(engine, "c")[0]
    with engine.begin() as conn:
        log.append(conn, c, "user:3:carol", "meter.create")
        fork = {**forged, "tenant_id": c}
        fork_id = conn.execute(
            audit_log.insert()
            .values(**fork, prev_hash=GENESIS_HASH, hash=entry_hash(GENESIS_HASH, **fork))
            .returning(audit_log.c.id)
        ).scalar_one()
    assert verify_chain(engine, c) == (False, fork_id)


def test_concurrent_appends_keep_one_unbroken_chain(engine: Engine) -> None:
    (a,) = _tenants(engine, "a")
    log = AuditLog()
    threads_n, appends_n = 6, 15
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def work(worker: int) -> None:
        try:
            start.wait()
            for n in range(appends_n):
                with engine.begin() as conn:
                    conn.execute(select(func.count()).select_from(customer)).scalar_one()
                    if n % 2:  # a mutation, then its entry (the API's create routes)
                        row = repo.customers.create(conn, a, {"number": f"{worker}-{n}", "name": "x"})
                        log.append(conn, a, f"worker:{worker}", "customer.create", "customer", row.id)
                    else:  # the entry alone, as the first write of its transaction (failed logins)
                        log.append(conn, a, f"worker:{worker}", "auth.login_failed")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    with engine.connect() as conn:
        prev_hashes = (
            conn.execute(select(audit_log.c.prev_hash).where(audit_log.c.tenant_id == a)).scalars().all()
        )
    assert len(prev_hashes) == threads_n * appends_n
    assert len(set(prev_hashes)) == len(prev_hashes)  # nobody shares a predecessor: no fork
    assert verify_chain(engine, a) == (True, None)
