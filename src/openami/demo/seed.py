"""The demo tenant: a small multi-utility with houses and condominium buildings.

Layout (deterministic, so the demo and its tests know what to expect):

* ``BUILDINGS`` condominium buildings, each with ``APARTMENTS_PER_BUILDING`` apartments; an apartment has
  electricity, water and heat service points (heat is what a building shares, hence cost sharing later);
  each building has one gateway on its roof.
* ``HOUSES`` detached houses with electricity, water and gas, behind street gateways of at most
  ``METERS_PER_STREET_GATEWAY`` meters.
* One customer and one account per household.
* ``DLMS_PREMISES`` commercial premises on Market Street, each with one DLMS electricity meter that
  pushes ciphered DataNotifications straight to the head-end over TCP (no gateway). Their system titles
  and keys are derived from the serial (:class:`DlmsDemoMeter`), so the seed, the key vault and the
  simulator agree without sharing state. Those keys are public and for the demo only.
* Two OpenAMI gateways (:func:`edge_gateways`; the edge agent, :mod:`openami.edge`) in the buildings'
  plant rooms, one reading wired M-Bus meters behind an M-Bus-to-TCP converter, one reading Modbus
  sub-meters behind a Modbus TCP gateway, each forwarding sealed batches over the gateway link. Their
  link keys are derived from the gateway's name (:attr:`EdgeDemoGateway.link_key`): public, demo only.

It is written with set-based Core inserts because it creates a few thousand rows and must start the
demo in seconds; it is idempotent (a second run finds the tenant and does nothing, except adding the
DLMS meters to a demo database seeded before they existed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import Connection, Engine, Table, insert, select

from openami.security.keyvault import KeyKind, KeyVault
from openami.store import schema

DEMO_TENANT = "demo"
BUILDINGS = 3
APARTMENTS_PER_BUILDING = 10
HOUSES = 70
METERS_PER_STREET_GATEWAY = 60

APARTMENT_UTILITIES = ("electricity", "water", "heat")
HOUSE_UTILITIES = ("electricity", "water", "gas")
SERIAL_PREFIX = {"electricity": "E", "water": "W", "gas": "G", "heat": "H"}
METER_MODELS = {
    "electricity": ("Iskraemeco", "AM550"),
    "water": ("Diehl", "HYDRUS 2.0"),
    "gas": ("Itron", "Intelis"),
    "heat": ("Kamstrup", "MULTICAL 603"),
}
DLMS_PREMISES = 12
DLMS_PULL_PREMISES = 6
DLMS_METER_MODEL = ("Landis+Gyr", "E450")
DLMS_PROTOCOL = "dlms"
IEC_PROTOCOL = "iec62056-21"
IEC_METERS = 3
WMBUS_PROTOCOL = "wmbus"
#: What the demo's field devices are, by the protocol of the meters behind them.
FIELD_DEVICE_MODELS: Final = {
    "modbus": "Modbus TCP gateway",
    "mbus": "M-Bus-to-TCP converter",
    IEC_PROTOCOL: "RS-485-to-TCP converter",
    "dsmr": "P1 dongle (TCP)",
    "sml": "optical reading head (TCP bridge)",
}
EDGE_GATEWAY_MODEL = "OpenAMI gateway"
EDGE_GATEWAY_PROTOCOL = "openami-link"
"""``comm_device.protocol`` of the OpenAMI gateways: they talk over the sealed gateway link
(``docs/drivers/gateway-link.md``), not the JSON uplink of the virtual gateways (``mqtt-json``)."""
#: The demo meters' FLAG-style manufacturer prefix of their system titles ("OAM", OpenAMI).
_DEMO_TITLE_PREFIX: Final = b"OAM"


@dataclass(frozen=True)
class DemoMeter:
    serial: str
    medium: str
    gateway: str


@dataclass(frozen=True)
class Household:
    code: str
    address: str
    building: str | None
    gateway: str
    meters: tuple[DemoMeter, ...]


@dataclass(frozen=True)
class DlmsDemoMeter:
    """A Market Street meter that pushes over DLMS; its system title and keys follow from the serial.

    The keys are a hash of the serial and a published label, so anyone can compute them: they make the
    demo's pushes exercise deciphering and the replay guard, and must never protect a real meter.
    """

    serial: str
    premise: str
    address: str

    @property
    def system_title(self) -> bytes:
        return _DEMO_TITLE_PREFIX + hashlib.sha256(f"openami-demo-title:{self.serial}".encode()).digest()[:5]

    @property
    def encryption_key(self) -> bytes:
        return _demo_key("ek", self.serial)

    @property
    def authentication_key(self) -> bytes:
        return _demo_key("ak", self.serial)


def _demo_key(kind: KeyKind, serial: str) -> bytes:
    return hashlib.sha256(f"openami-demo-{kind}:{serial}".encode()).digest()[:16]


@dataclass(frozen=True)
class BuildingMeter:
    """A building's sub-meter on a field bus: Modbus (``unit`` = device id behind the gateway), wired
    M-Bus (``unit`` = primary address behind the converter) or IEC 62056-21 on an RS-485 line (addressed
    by its serial; ``unit`` only orders them)."""

    serial: str
    building: str
    medium: str
    protocol: str
    model: str
    unit: int


@dataclass(frozen=True)
class RadioDemoMeter:
    """A wireless M-Bus (OMS) meter in a building, heard by the receiver in its stairwell. Its AES key is
    derived from the serial like the DLMS meters' (public, demo only); ``ident`` is the 8-digit radio id."""

    serial: str
    building: str
    medium: str
    ident: str
    security_mode: int

    @property
    def key(self) -> bytes:
        return _demo_key("ek", self.serial)

    @property
    def link_address(self) -> bytes:
        """The 8 bytes the key vault files the key under (see ADR 0009)."""
        from openami.protocols.wmbus.encode import make_address
        from openami.simulator.wmbus_meter import DEVICE_TYPES

        return make_address("OAM", self.ident, 1, DEVICE_TYPES[self.medium]).to_bytes()  # type: ignore[index]


@dataclass(frozen=True)
class EdgeDemoMeter:
    """A meter an OpenAMI gateway reads: wired M-Bus (``unit`` = primary address behind the gateway's
    converter) or Modbus (``unit`` = device id behind its Modbus TCP gateway, ``model`` the register
    map)."""

    serial: str
    building: str
    medium: str
    protocol: str
    model: str
    unit: int


@dataclass(frozen=True)
class EdgeDemoGateway:
    """An OpenAMI gateway (what ``openami gateway`` runs: a :class:`~openami.edge.agent.GatewayAgent`,
    which the demo runs in its own process, :mod:`openami.demo.edge`) and the meters it reads. Its
    32-byte link key is a hash of its name and a published label, like the DLMS meters' keys: anyone
    can compute it, so it must never protect a real gateway."""

    ident: str
    building: str
    meters: tuple[EdgeDemoMeter, ...]

    @property
    def link_key(self) -> bytes:
        return hashlib.sha256(f"openami-demo-link:{self.ident}".encode()).digest()


@dataclass(frozen=True)
class DemoLayout:
    tenant_id: int
    meters: list[DemoMeter]
    """The meters behind gateways (played by virtual gateways over MQTT)."""
    dlms_meters: list[DlmsDemoMeter] = field(default_factory=list)
    """The meters pushing DLMS directly to the head-end."""
    pull_meters: list[DlmsDemoMeter] = field(default_factory=list)
    """The meters the head-end reads over DLMS (load profile, clock) through their modems."""
    building_meters: list[BuildingMeter] = field(default_factory=list)
    """The buildings' sub-meters read over Modbus, wired M-Bus and IEC 62056-21."""
    radio_meters: list[RadioDemoMeter] = field(default_factory=list)
    """The wireless M-Bus meters the head-end's receiver hears."""
    edge_gateways: list[EdgeDemoGateway] = field(default_factory=list)
    """The OpenAMI gateways, each with the meters it reads and forwards over the gateway link."""

    @property
    def gateways(self) -> list[str]:
        """The virtual gateways publishing JSON (the OpenAMI gateways are :attr:`edge_gateways`)."""
        return sorted({m.gateway for m in self.meters})

    @property
    def edge_meters(self) -> list[EdgeDemoMeter]:
        return [meter for gateway in self.edge_gateways for meter in gateway.meters]


def households() -> list[Household]:
    """The demo's households with their gateway and meters: a pure function, so the seed and the
    simulator agree on every serial without reading the database (which users may add to)."""
    rows: list[tuple[str, str, str | None, tuple[str, ...]]] = [
        (f"B{b:02d}-A{a:02d}", f"Linden Court {b}, apt {a}", f"B{b:02d}", APARTMENT_UTILITIES)
        for b in range(1, BUILDINGS + 1)
        for a in range(1, APARTMENTS_PER_BUILDING + 1)
    ]
    rows += [(f"H{h:03d}", f"{h} Meadow Lane", None, HOUSE_UTILITIES) for h in range(1, HOUSES + 1)]
    counters = dict.fromkeys(SERIAL_PREFIX, 0)
    street_counts: list[int] = []
    result = []
    for code, address, building, utilities in rows:
        if building is None:
            if not street_counts or street_counts[-1] + len(utilities) > METERS_PER_STREET_GATEWAY:
                street_counts.append(0)
            street_counts[-1] += len(utilities)
        gateway = f"GW-{building}" if building else f"GW-S{len(street_counts):02d}"
        meters = []
        for utility in utilities:
            counters[utility] += 1
            meters.append(DemoMeter(f"{SERIAL_PREFIX[utility]}-{counters[utility]:06d}", utility, gateway))
        result.append(Household(code, address, building, gateway, tuple(meters)))
    return result


def dlms_meters() -> list[DlmsDemoMeter]:
    """The Market Street premises and their DLMS meters: pure, like :func:`households`."""
    return [
        DlmsDemoMeter(f"DLMS-{n:06d}", f"M{n:02d}", f"{n} Market Street") for n in range(1, DLMS_PREMISES + 1)
    ]


def pull_meters() -> list[DlmsDemoMeter]:
    """The Station Road premises, whose meters the head-end polls: pure, like :func:`dlms_meters`."""
    return [
        DlmsDemoMeter(f"DLMS-P{n:05d}", f"S{n:02d}", f"{n} Station Road")
        for n in range(1, DLMS_PULL_PREMISES + 1)
    ]


def building_meters() -> list[BuildingMeter]:
    """Per building, the common-area electricity and central heat meters on Modbus; in building B01's
    boiler room, a heat meter and two water meters on wired M-Bus (the ids and primary addresses the
    M-Bus bus simulator answers to); in B02, three legacy meters on one RS-485 line (IEC 62056-21); and
    the caretakers' flats' meters read at their consumer ports, a DSMR P1 dongle in B01 and an optical
    head on an SML meter in B02 (``unit`` seeds their households). Pure, like the rest."""
    found = []
    for b in range(1, BUILDINGS + 1):
        building = f"B{b:02d}"
        found.append(
            BuildingMeter(f"SDM-{building}", building, "electricity", "modbus", "eastron-sdm630", 2 * b - 1)
        )
        found.append(BuildingMeter(f"HEAT-{building}", building, "heat", "modbus", "openami-heat", 2 * b))
    found.append(BuildingMeter("MB-12345678", "B01", "heat", "mbus", "", 1))
    found.append(BuildingMeter("MB-12345699", "B01", "water", "mbus", "", 2))
    found.append(BuildingMeter("MB-87654321", "B01", "water", "mbus", "", 5))
    found += [
        BuildingMeter(f"7100000{n}", "B02", "electricity", IEC_PROTOCOL, "Iskraemeco ME382", n)
        for n in range(1, IEC_METERS + 1)
    ]
    found.append(BuildingMeter("P1-B01", "B01", "electricity", "dsmr", "DSMR 5 meter", 1))
    found.append(BuildingMeter("SML-B02", "B02", "electricity", "sml", "eHZ meter", 2))
    return found


def radio_meters() -> list[RadioDemoMeter]:
    """Building B03's wireless M-Bus meters: water meters (security mode 5) in the apartments' risers and
    the building's heat meter (mode 7, authenticated). Pure, like the rest."""
    found = [RadioDemoMeter(f"WM-3000000{n}", "B03", "water", f"3000000{n}", 5) for n in range(1, 5)]
    found.append(RadioDemoMeter("WM-40000001", "B03", "heat", "40000001", 7))
    return found


def edge_gateways() -> list[EdgeDemoGateway]:
    """The OpenAMI gateways: GW-EDGE-1 in building B03's boiler room reads two heat and two water
    meters on wired M-Bus (odd primary addresses heat, even water); GW-EDGE-2 in building B01's plant
    room reads the EV charger's and the heat pump's electricity meters (Eastron SDM630) and two heat
    meters on Modbus. Pure, like the rest."""
    mbus = tuple(
        EdgeDemoMeter(f"MB-3100000{n}", "B03", "heat" if n % 2 else "water", "mbus", "", n)
        for n in range(1, 5)
    )
    modbus = (
        EdgeDemoMeter("SDM-EV-B01", "B01", "electricity", "modbus", "eastron-sdm630", 1),
        EdgeDemoMeter("SDM-HP-B01", "B01", "electricity", "modbus", "eastron-sdm630", 2),
        EdgeDemoMeter("HEAT-HP-B01", "B01", "heat", "modbus", "openami-heat", 3),
        EdgeDemoMeter("HEAT-DHW-B01", "B01", "heat", "modbus", "openami-heat", 4),
    )
    return [EdgeDemoGateway("GW-EDGE-1", "B03", mbus), EdgeDemoGateway("GW-EDGE-2", "B01", modbus)]


def modem_ident(serial: str) -> str:
    """The demo's name for the modem of a polled meter (its address changes with every demo run)."""
    return f"MODEM-{serial}"


def _insert(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows and return their ids in order (RETURNING works on SQLite >= 3.35 and PostgreSQL)."""
    if not rows:
        return []
    result = conn.execute(insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
    return [row.id for row in result]


def seed_demo(engine: Engine, *, now: datetime | None = None) -> DemoLayout:
    """Create the demo tenant if missing and return the meters the simulator should play."""
    now = now or datetime.now(UTC)
    layout = households()
    pushing, polled = dlms_meters(), pull_meters()
    with engine.begin() as conn:
        tenant_id = conn.execute(
            select(schema.tenant.c.id).where(schema.tenant.c.slug == DEMO_TENANT)
        ).scalar()
        if tenant_id is None:
            tenant_id = _create(conn, layout, now)
        if not _meter_ids(conn, int(tenant_id), [m.serial for m in pushing]):
            _create_dlms(conn, int(tenant_id), pushing, now)
        if not _meter_ids(conn, int(tenant_id), [m.serial for m in polled]):
            _create_dlms(conn, int(tenant_id), polled, now)
            _create_modems(conn, int(tenant_id), polled)
        sub_meters = building_meters()
        missing = [m for m in sub_meters if m.serial not in _meter_ids(conn, int(tenant_id), [m.serial])]
        if missing:
            _create_building_meters(conn, int(tenant_id), missing, now)
        radio = radio_meters()
        known = _meter_ids(conn, int(tenant_id), [m.serial for m in radio])
        unknown = [m for m in radio if m.serial not in known]
        if unknown:
            _create_radio_meters(conn, int(tenant_id), unknown, now)
        edge = edge_gateways()
        _create_edge(conn, int(tenant_id), edge, now)
    return DemoLayout(
        int(tenant_id),
        [meter for household in layout for meter in household.meters],
        pushing,
        polled,
        sub_meters,
        radio,
        edge,
    )


def provision_dlms_keys(engine: Engine, vault: KeyVault, layout: DemoLayout) -> int:
    """Store each DLMS demo meter's EK and AK (pushing and polled) in the key vault, linked to its meter;
    returns keys stored.

    Idempotent: a key already stored with the same value is left alone, so restarting the demo does not
    bump every ``key_version``. Blocking; run it in a thread.
    """
    dlms = [*layout.dlms_meters, *layout.pull_meters]
    with engine.connect() as conn:
        ids = _meter_ids(conn, layout.tenant_id, [m.serial for m in dlms])
    stored = 0
    for demo_meter in dlms:
        keys: tuple[tuple[KeyKind, bytes], ...] = (
            ("ek", demo_meter.encryption_key),
            ("ak", demo_meter.authentication_key),
        )
        for kind, secret in keys:
            if vault.get(layout.tenant_id, demo_meter.system_title, kind) != secret:
                vault.store(
                    layout.tenant_id,
                    system_title=demo_meter.system_title,
                    meter_id=ids[demo_meter.serial],
                    kind=kind,
                    secret=secret,
                )
                stored += 1
    return stored


def provision_radio_keys(engine: Engine, vault: KeyVault, layout: DemoLayout) -> int:
    """Store each wireless demo meter's key under its link address (idempotent, like the DLMS keys)."""
    with engine.connect() as conn:
        ids = _meter_ids(conn, layout.tenant_id, [m.serial for m in layout.radio_meters])
    stored = 0
    for radio in layout.radio_meters:
        if vault.get(layout.tenant_id, radio.link_address, "ek") != radio.key:
            vault.store(
                layout.tenant_id,
                system_title=radio.link_address,
                meter_id=ids[radio.serial],
                kind="ek",
                secret=radio.key,
            )
            stored += 1
    return stored


def provision_edge_keys(engine: Engine, vault: KeyVault, layout: DemoLayout) -> int:
    """Store each OpenAMI gateway's link key in the key vault (idempotent, like the DLMS keys: a key
    already stored is left alone, so a restart neither bumps ``key_version`` nor resets the gateway's
    replay window); returns keys stored. Blocking; run it in a thread."""
    idents = [gateway.ident for gateway in layout.edge_gateways]
    with engine.connect() as conn:
        ids = _device_ids(conn, layout.tenant_id, idents)
    stored = 0
    for gateway in layout.edge_gateways:
        if vault.gateway_key(layout.tenant_id, ids[gateway.ident]) != gateway.link_key:
            vault.store_gateway_key(layout.tenant_id, ids[gateway.ident], gateway.link_key)
            stored += 1
    return stored


def _device_ids(conn: Connection, tenant_id: int, idents: list[str]) -> dict[str, int]:
    rows = conn.execute(
        select(schema.comm_device.c.ident, schema.comm_device.c.id).where(
            schema.comm_device.c.tenant_id == tenant_id, schema.comm_device.c.ident.in_(idents)
        )
    ).all()
    return {row.ident: int(row.id) for row in rows}


def _meter_ids(conn: Connection, tenant_id: int, serials: list[str]) -> dict[str, int]:
    rows = conn.execute(
        select(schema.meter.c.serial, schema.meter.c.id).where(
            schema.meter.c.tenant_id == tenant_id, schema.meter.c.serial.in_(serials)
        )
    ).all()
    return {row.serial: int(row.id) for row in rows}


def _create(conn: Connection, layout: list[Household], now: datetime) -> int:
    (tenant_id,) = _insert(
        conn,
        schema.tenant,
        [{"slug": DEMO_TENANT, "name": "Demo Utility", "timezone": "Europe/Berlin", "currency": "EUR"}],
    )
    t = {"tenant_id": tenant_id}
    buildings = sorted({h.building for h in layout if h.building})
    building_ids = dict(
        zip(
            buildings,
            _insert(
                conn,
                schema.service_point,
                [
                    {**t, "code": b, "kind": "building", "address": f"Linden Court {int(b[1:])}"}
                    for b in buildings
                ],
            ),
            strict=True,
        )
    )
    gateway_names = sorted({h.gateway for h in layout})
    gateway_ids = dict(
        zip(
            gateway_names,
            _insert(
                conn,
                schema.comm_device,
                [
                    {**t, "ident": g, "kind": "gateway", "model": "OpenAMI edge", "protocol": "mqtt-json"}
                    for g in gateway_names
                ],
            ),
            strict=True,
        )
    )
    customer_ids = _insert(
        conn,
        schema.customer,
        [
            {
                **t,
                "number": f"C-{h.code}",
                "name": f"Household {h.code}",
                "email": f"{h.code.lower()}@example.org",
            }
            for h in layout
        ],
    )
    account_ids = _insert(
        conn,
        schema.account,
        [
            {**t, "customer_id": cid, "number": f"A-{h.code}", "billing_address": h.address}
            for cid, h in zip(customer_ids, layout, strict=True)
        ],
    )
    points: list[dict[str, Any]] = []
    meters: list[dict[str, Any]] = []
    for account_id, household in zip(account_ids, layout, strict=True):
        for meter in household.meters:
            points.append(
                {
                    **t,
                    "code": f"{household.code}-{meter.medium[:4].upper()}",
                    "kind": "apartment" if household.building else "premise",
                    "utility": meter.medium,
                    "address": household.address,
                    "account_id": account_id,
                    "parent_id": building_ids.get(household.building) if household.building else None,
                }
            )
            maker, model = METER_MODELS[meter.medium]
            meters.append(
                {
                    **t,
                    "serial": meter.serial,
                    "medium": meter.medium,
                    "protocol": "mqtt-json",
                    "manufacturer": maker,
                    "model": model,
                    "comm_device_id": gateway_ids[meter.gateway],
                    "installed_at": now,
                    "status": "active",
                }
            )
    point_ids = _insert(conn, schema.service_point, points)
    meter_ids = _insert(conn, schema.meter, meters)
    conn.execute(
        insert(schema.meter_installation),
        [
            {**t, "meter_id": m, "service_point_id": p, "installed_at": now}
            for m, p in zip(meter_ids, point_ids, strict=True)
        ],
    )
    return int(tenant_id)


def _create_dlms(conn: Connection, tenant_id: int, pushing: list[DlmsDemoMeter], now: datetime) -> None:
    """One commercial customer, account, premise and directly connected DLMS meter per demo meter."""
    t = {"tenant_id": tenant_id}
    customer_ids = _insert(
        conn,
        schema.customer,
        [
            {
                **t,
                "number": f"C-{m.premise}",
                "name": f"Shop {m.address}",
                "kind": "commercial",
                "email": f"{m.premise.lower()}@example.org",
            }
            for m in pushing
        ],
    )
    account_ids = _insert(
        conn,
        schema.account,
        [
            {**t, "customer_id": cid, "number": f"A-{m.premise}", "billing_address": m.address}
            for cid, m in zip(customer_ids, pushing, strict=True)
        ],
    )
    point_ids = _insert(
        conn,
        schema.service_point,
        [
            {
                **t,
                "code": f"{m.premise}-ELEC",
                "kind": "premise",
                "utility": "electricity",
                "address": m.address,
                "account_id": aid,
            }
            for aid, m in zip(account_ids, pushing, strict=True)
        ],
    )
    maker, model = DLMS_METER_MODEL
    meter_ids = _insert(
        conn,
        schema.meter,
        [
            {
                **t,
                "serial": m.serial,
                "medium": "electricity",
                "protocol": DLMS_PROTOCOL,
                "manufacturer": maker,
                "model": model,
                "installed_at": now,
                "status": "active",
            }
            for m in pushing
        ],
    )
    conn.execute(
        insert(schema.meter_installation),
        [
            {**t, "meter_id": m, "service_point_id": p, "installed_at": now}
            for m, p in zip(meter_ids, point_ids, strict=True)
        ],
    )


def _create_modems(conn: Connection, tenant_id: int, polled: list[DlmsDemoMeter]) -> None:
    """One modem per polled meter; its address is set by the demo run that starts the simulator."""
    modem_ids = _insert(
        conn,
        schema.comm_device,
        [
            {
                "tenant_id": tenant_id,
                "ident": modem_ident(m.serial),
                "kind": "modem",
                "model": "DLMS TCP modem",
                "protocol": DLMS_PROTOCOL,
            }
            for m in polled
        ],
    )
    ids = _meter_ids(conn, tenant_id, [m.serial for m in polled])
    for meter, modem_id in zip(polled, modem_ids, strict=True):
        conn.execute(
            schema.meter.update()
            .where(schema.meter.c.id == ids[meter.serial])
            .values(comm_device_id=modem_id)
        )


def _create_building_meters(
    conn: Connection, tenant_id: int, sub_meters: list[BuildingMeter], now: datetime
) -> None:
    """The buildings' field-bus meters, each with its device entry (address set per demo run), installed
    at the building's service point."""
    t = {"tenant_id": tenant_id}
    modem_ids = _insert(
        conn,
        schema.comm_device,
        [
            {
                **t,
                "ident": modem_ident(m.serial),
                "kind": "modem",
                "model": FIELD_DEVICE_MODELS[m.protocol],
                "protocol": m.protocol,
            }
            for m in sub_meters
        ],
    )
    rows = [
        {
            "serial": m.serial,
            "medium": m.medium,
            "protocol": m.protocol,
            "model": m.model,
            "comm_device_id": modem_id,
        }
        for m, modem_id in zip(sub_meters, modem_ids, strict=True)
    ]
    _install(conn, tenant_id, rows, [m.building for m in sub_meters], now)


def _create_radio_meters(
    conn: Connection, tenant_id: int, radio: list[RadioDemoMeter], now: datetime
) -> None:
    """Wireless meters have no device entry of their own: any receiver that hears them will do."""
    rows = [
        {
            "serial": m.serial,
            "medium": m.medium,
            "protocol": WMBUS_PROTOCOL,
            "manufacturer": "OpenAMI",
            "model": "simulated OMS meter",
        }
        for m in radio
    ]
    _install(conn, tenant_id, rows, [m.building for m in radio], now)


def _create_edge(conn: Connection, tenant_id: int, gateways: list[EdgeDemoGateway], now: datetime) -> None:
    """The OpenAMI gateways and their meters, whichever are missing (a demo database seeded before
    they existed gets them). The gateways have no address: the head-end never reads their meters itself,
    the gateways forward what they read."""
    known = _device_ids(conn, tenant_id, [g.ident for g in gateways])
    missing = [g for g in gateways if g.ident not in known]
    created = _insert(
        conn,
        schema.comm_device,
        [
            {
                "tenant_id": tenant_id,
                "ident": g.ident,
                "kind": "gateway",
                "model": EDGE_GATEWAY_MODEL,
                "protocol": EDGE_GATEWAY_PROTOCOL,
            }
            for g in missing
        ],
    )
    known.update(zip([g.ident for g in missing], created, strict=True))
    meters = [(g, m) for g in gateways for m in g.meters]
    present = _meter_ids(conn, tenant_id, [m.serial for _, m in meters])
    new = [(g, m) for g, m in meters if m.serial not in present]
    if not new:
        return
    rows = [
        {
            "serial": m.serial,
            "medium": m.medium,
            "protocol": m.protocol,
            "model": m.model,
            "comm_device_id": known[g.ident],
        }
        for g, m in new
    ]
    _install(conn, tenant_id, rows, [m.building for _, m in new], now)


def _install(
    conn: Connection, tenant_id: int, meters: list[dict[str, Any]], buildings: list[str], now: datetime
) -> None:
    """Insert ``meters`` (column values) installed now at the service points of ``buildings``."""
    t = {"tenant_id": tenant_id}
    meter_ids = _insert(conn, schema.meter, [{**t, **m, "installed_at": now} for m in meters])
    points = dict(
        conn.execute(
            select(schema.service_point.c.code, schema.service_point.c.id).where(
                schema.service_point.c.tenant_id == tenant_id, schema.service_point.c.kind == "building"
            )
        ).all()
    )
    conn.execute(
        insert(schema.meter_installation),
        [
            {**t, "meter_id": meter_id, "service_point_id": points[building], "installed_at": now}
            for building, meter_id in zip(buildings, meter_ids, strict=True)
        ],
    )
