"""Communication paths: how a meter's device chain names its bottleneck, in bulk from the store, and
the limits and rates the settings give each kind of path."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import Engine, update

from openami.config import Settings
from openami.hes.paths import Device, limit_for, path_for, path_kind, paths_for_meters, rate_for
from openami.store.schema import comm_device
from tests.hes.planning_rows import make_devices, make_meters, make_tenant


def _device(number: int, kind: str, ident: str, address: str | None = None) -> Device:
    return Device(number, None, kind, ident, address)


def test_the_topmost_gateway_or_concentrator_names_the_path() -> None:
    modem = _device(1, "modem", "MD-1", "tcp://10.0.0.9:4059")
    concentrator = _device(2, "concentrator", "C-1")
    gateway = _device(3, "gateway", "GW-1")
    assert path_for([modem, concentrator, gateway]) == "gateway:GW-1"
    assert path_for([modem, concentrator]) == "concentrator:C-1"
    assert path_for([concentrator, gateway]) == "gateway:GW-1"


def test_a_shared_serial_line_is_the_path_whatever_hangs_above_it() -> None:
    gateway = _device(3, "gateway", "GW-1")
    first = _device(1, "gateway", "CONV-1", "mbus+tcp://10.1.2.3:2001?primary=5")
    second = _device(2, "gateway", "CONV-2", "mbus+tcp://10.1.2.3:2001?primary=6")
    assert path_for([first, gateway]) == path_for([second]) == "port:10.1.2.3:2001"
    assert (
        path_for([_device(4, "gateway", "MB-1", "modbus+tcp://10.1.2.3:502?unit=1"), gateway])
        == "gateway:GW-1"
    )


def test_without_a_gateway_the_topmost_modem_then_the_address_port() -> None:
    pool = _device(2, "modem", "POOL-A")
    assert path_for([_device(1, "modem", "MD-1"), pool]) == "modem:POOL-A"
    assert (
        path_for([_device(1, "converter", "X", "mbus+tcp://10.1.2.3:2001?primary=5")]) == "port:10.1.2.3:2001"
    )
    assert (
        path_for([_device(1, "converter", "X", "hdlc+serial:///dev/ttyUSB0?baud=9600")])
        == "port:/dev/ttyUSB0"
    )
    assert path_for([_device(1, "converter", "X")]) is None
    assert path_for([]) is None


def test_an_overlong_path_fits_the_column_and_stays_distinct() -> None:
    first = path_for([_device(1, "converter", "X", f"tcp://{'a' * 200}.example:1")])
    second = path_for([_device(1, "converter", "X", f"tcp://{'a' * 200}.example:2")])
    assert first is not None and second is not None
    assert len(first) <= 128 and len(second) <= 128
    assert first != second


def test_paths_for_meters_walks_the_parents_in_bulk(engine: Engine) -> None:
    tenant = make_tenant(engine)
    ids = make_devices(
        engine,
        tenant,
        [
            ("GW-1", "gateway", None, None),
            ("C-1", "concentrator", "GW-1", None),
            ("MD-1", "modem", "C-1", "tcp://10.0.0.1:4059"),
            ("MD-2", "modem", None, "tcp://10.0.0.2:4059"),
            ("CONV-1", "converter", None, "mbus+tcp://10.0.0.3:2001"),
        ],
    )
    deep = make_meters(engine, tenant, 3, prefix="D", device=ids["MD-1"])
    alone = make_meters(engine, tenant, 1, prefix="A", device=ids["MD-2"])
    wired = make_meters(engine, tenant, 2, prefix="W", device=ids["CONV-1"])
    loose = make_meters(engine, tenant, 1, prefix="L")
    found = paths_for_meters(engine, [*deep, *alone, *wired, *loose, 999_999])
    assert found == {
        **dict.fromkeys(deep, "gateway:GW-1"),
        alone[0]: "modem:MD-2",
        **dict.fromkeys(wired, "port:10.0.0.3:2001"),
        loose[0]: None,
    }


def test_a_parent_cycle_written_behind_the_repositories_ends_the_walk(engine: Engine) -> None:
    tenant = make_tenant(engine)
    ids = make_devices(
        engine, tenant, [("C-1", "concentrator", None, None), ("C-2", "concentrator", "C-1", None)]
    )
    with engine.begin() as conn:
        conn.execute(update(comm_device).where(comm_device.c.id == ids["C-1"]).values(parent_id=ids["C-2"]))
    (meter_id,) = make_meters(engine, tenant, 1, device=ids["C-2"])
    assert paths_for_meters(engine, [meter_id]) == {meter_id: "concentrator:C-1"}


def test_limits_and_rates_by_path_kind() -> None:
    settings = Settings()
    assert path_kind("port:10.0.0.3:2001") == "port"
    assert limit_for("concentrator:C-1", settings.hes_path_limits) == 4
    assert limit_for("port:10.0.0.3:2001", settings.hes_path_limits) == 1
    assert limit_for("modem:POOL-A", settings.hes_path_limits) == 16
    assert limit_for(None, settings.hes_path_limits) is None
    assert rate_for("gateway:GW-1", settings.hes_path_rates) is None
    assert rate_for("gateway:GW-1", Settings(hes_path_rates={"gateway": 2.5}).hes_path_rates) == 2.5
    assert limit_for("gateway:GW-1", Settings(hes_path_limits={"port": 2}).hes_path_limits) is None


@pytest.mark.parametrize(
    "values",
    [
        {"hes_path_limits": {"cell": 3}},
        {"hes_path_limits": {"port": 0}},
        {"hes_path_rates": {"modem": 0}},
        {"hes_plan_horizon_s": 10},
        {"hes_catch_up_days": 0},
    ],
)
def test_bad_throttling_and_planning_settings_are_refused(values: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)  # type: ignore[arg-type]
