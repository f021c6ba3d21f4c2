"""The directory: batch resolution of serials and codes, its cache, and concurrent first sight."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, event, func, select

from openami.bus.messages import Reading, ReadingBatch
from openami.demo.seed import seed_demo
from openami.mdm.directory import Directory
from openami.store.schema import channel

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def _batch(codes: list[str], kind: str = "register") -> ReadingBatch:
    readings = [
        Reading(meter="E-000001", channel=code, ts=T0 + timedelta(hours=i), value=float(i), kind=kind)  # type: ignore[arg-type]
        for i, code in enumerate(codes)
    ]
    return ReadingBatch.from_readings(readings, tenant="demo", source="test", received_at=T0)


def test_concurrent_first_sight_creates_each_channel_once(engine: Engine) -> None:
    seed_demo(engine)
    codes = [f"1-0:{n}.8.0" for n in range(1, 6)]
    directories = [Directory(engine) for _ in range(4)]
    results: list[set[int]] = []
    errors: list[BaseException] = []

    def work(directory: Directory) -> None:
        try:
            resolved = directory.resolve(_batch(codes))
            results.append({row.channel_id for row in resolved.rows["register"]})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(d,)) for d in directories]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    assert len(results[0]) == 5
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(channel)).scalar_one() == 5


def test_known_channels_are_answered_from_the_cache(engine: Engine) -> None:
    seed_demo(engine)
    directory = Directory(engine)
    directory.resolve(_batch(["1-0:1.8.0"]))
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    resolved = directory.resolve(_batch(["1-0:1.8.0"]))
    assert len(resolved.rows["register"]) == 1
    assert not [s for s in statements if "channel" in s or "meter" in s]  # tenant, meter, channel cached


def test_kind_conflict_and_unknown_meter_go_to_unknown(engine: Engine) -> None:
    seed_demo(engine)
    directory = Directory(engine)
    directory.resolve(_batch(["1-0:1.8.0"]))
    clash = directory.resolve(_batch(["1-0:1.8.0"], kind="interval"))
    assert len(clash.unknown) == 1
    stranger = ReadingBatch.from_readings(
        [Reading(meter="NOPE", channel="x", ts=T0, value=1.0)], tenant="demo", source="t", received_at=T0
    )
    assert len(directory.resolve(stranger).unknown) == 1
    other_tenant = stranger.model_copy(update={"tenant": "ghost"})
    assert len(directory.resolve(other_tenant).unknown) == 1
