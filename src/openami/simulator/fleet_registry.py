"""A simulated fleet registered in the store in bulk: 100,000 meters in seconds, not one call per meter.

The head-end knows a meter by its row and its communication device's address, and the collectors read
the meter's own place on the bus from that address (``mbus+tcp://host:port?primary=N``,
``modbus+tcp://host:port?unit=N``). So every meter gets a device of its own carrying that address (kind
``modem``, as the demo registers polled sub-meters), hung under a device for its converter: a
``concentrator`` for an M-Bus-to-TCP converter, a ``gateway`` for a Modbus TCP gateway. The converter
is the shared bottleneck, and it names the meter's communication path for throttling
(:mod:`openami.hes.paths`): ``port:<host>:<port>`` for an M-Bus line (one meter at a time),
``gateway:<ident>`` for a Modbus gateway.

Rows go in with multi-row inserts (SQLAlchemy Core executemany), a few thousand per statement, in one
transaction: the fleet is in the store completely or not at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from sqlalchemy import Connection, Engine, insert, select

from openami.simulator.fleet import Endpoint, FleetMeter
from openami.store.schema import comm_device, meter, tenant

__all__ = ["RegisteredFleet", "ServedFleet", "register_fleet"]

_ROWS: Final = 5000
"""Rows per insert statement."""
_KINDS: Final = {"mbus": "concentrator", "modbus": "gateway"}
_MANUFACTURERS: Final = {"heat": "KAM", "water": "ZRI", "electricity": "Eastron"}

T = TypeVar("T")


class ServedFleet(Protocol):
    """A fleet being served, with the ports its servers got (:class:`~openami.simulator.fleet.FleetProcesses`
    or :class:`~openami.simulator.fleet.SimulatedFleet`)."""

    @property
    def endpoints(self) -> list[Endpoint]: ...

    def address(self, meter: FleetMeter) -> str: ...

    def endpoint_address(self, endpoint: Endpoint) -> str: ...


@dataclass(frozen=True, slots=True)
class RegisteredFleet:
    """The tenant the fleet was registered under, and each meter's id by fleet index."""

    tenant_id: int
    meter_ids: dict[int, int]


def _chunks(rows: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(rows), _ROWS):
        yield rows[start : start + _ROWS]


def _insert(conn: Connection, table: Any, rows: Sequence[dict[str, Any]]) -> None:
    for chunk in _chunks(rows):
        conn.execute(insert(table), list(chunk))


def _ids(conn: Connection, tenant_id: int, column: Any, table: Any, keys: Iterable[str]) -> dict[str, int]:
    wanted = set(keys)
    rows = conn.execute(select(table.c.id, column).where(table.c.tenant_id == tenant_id))
    return {key: row_id for row_id, key in rows if key in wanted}


def register_fleet(
    engine: Engine, fleet: ServedFleet, *, slug: str, name: str = "Simulated fleet", timezone: str = "UTC"
) -> RegisteredFleet:
    """Create tenant ``slug`` and register every converter and meter of ``fleet`` under it (module
    docstring). The tenant must not exist yet (the unique slug refuses a second registration)."""
    with engine.begin() as conn:
        tenant_id = conn.execute(
            insert(tenant).values(slug=slug, name=name, timezone=timezone).returning(tenant.c.id)
        ).scalar_one()
        _insert(
            conn,
            comm_device,
            [
                {
                    "tenant_id": tenant_id,
                    "ident": e.ident,
                    "kind": _KINDS[e.protocol],
                    "model": f"simulated {e.protocol} converter",
                    "protocol": e.protocol,
                    "address": fleet.endpoint_address(e),
                }
                for e in fleet.endpoints
            ],
        )
        converters = _ids(
            conn, tenant_id, comm_device.c.ident, comm_device, (e.ident for e in fleet.endpoints)
        )
        meters = [m for e in fleet.endpoints for m in e.meters]
        parent = {e.index: converters[e.ident] for e in fleet.endpoints}
        _insert(
            conn,
            comm_device,
            [
                {
                    "tenant_id": tenant_id,
                    "ident": m.serial,
                    "kind": "modem",
                    "model": "bus address",
                    "protocol": m.protocol,
                    "address": fleet.address(m),
                    "parent_id": parent[m.endpoint],
                }
                for m in meters
            ],
        )
        devices = _ids(conn, tenant_id, comm_device.c.ident, comm_device, (m.serial for m in meters))
        _insert(
            conn,
            meter,
            [
                {
                    "tenant_id": tenant_id,
                    "serial": m.serial,
                    "manufacturer": _MANUFACTURERS[m.medium],
                    "model": m.model,
                    "medium": m.medium,
                    "protocol": m.protocol,
                    "comm_device_id": devices[m.serial],
                }
                for m in meters
            ],
        )
        ids = _ids(conn, tenant_id, meter.c.serial, meter, (m.serial for m in meters))
    return RegisteredFleet(tenant_id, {m.index: ids[m.serial] for m in meters})
