"""Registering simulated DLMS meters in a store, as an operator would: modem address, meter, vault keys."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Engine, insert, select

from openami.hes.dlms_targets import DLMS_PROTOCOL
from openami.security.keyvault import KeyVault
from openami.simulator.dlms_server import DlmsSimulator
from openami.store.schema import comm_device, meter


def wrapper_address(index: int, port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def register_dlms_meters(
    engine: Engine,
    vault: KeyVault,
    tenant_id: int,
    simulator: DlmsSimulator,
    address: Callable[[int, int], str] = wrapper_address,
) -> dict[str, int]:
    """One DLMS meter per simulated meter (``address(index, port)``, the wrapper over TCP by default);
    returns serial -> meter id."""
    with engine.begin() as conn:
        for index, (sim, port) in enumerate(zip(simulator.meters, simulator.ports, strict=True)):
            modem = conn.execute(
                insert(comm_device)
                .values(
                    tenant_id=tenant_id,
                    ident=f"MODEM-{sim.serial}",
                    kind="modem",
                    protocol="dlms",
                    address=address(index, port),
                )
                .returning(comm_device.c.id)
            ).scalar_one()
            conn.execute(
                insert(meter).values(
                    tenant_id=tenant_id,
                    serial=sim.serial,
                    medium="electricity",
                    protocol=DLMS_PROTOCOL,
                    comm_device_id=modem,
                )
            )
    with engine.connect() as conn:
        ids = {
            row.serial: int(row.id)
            for row in conn.execute(select(meter.c.serial, meter.c.id).where(meter.c.tenant_id == tenant_id))
        }
    for sim in simulator.meters:
        for kind, secret in (("ek", sim.keys.encryption_key), ("ak", sim.keys.authentication_key)):
            vault.store(
                tenant_id, system_title=sim.system_title, meter_id=ids[sim.serial], kind=kind, secret=secret
            )
    return ids
