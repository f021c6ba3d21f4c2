"""Frozen row types returned by the repositories.

One dataclass per table, with exactly the table's columns (a test keeps them in sync with
``openami.store.schema``), so a row maps with ``Model(**row._mapping)`` and no hand-written mapping code
can drift. They are also the API's response schemas: FastAPI/pydantic render stdlib dataclasses directly.
Money and multipliers stay ``Decimal`` (rendered as strings, never rounded through float).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class Tenant:
    id: int
    slug: str
    name: str
    timezone: str
    currency: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Customer:
    id: int
    tenant_id: int
    number: str
    name: str
    kind: str
    email: str | None
    phone: str | None
    address: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    tenant_id: int
    customer_id: int
    number: str
    status: str
    currency: str
    balance: Decimal
    billing_address: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ServicePoint:
    id: int
    tenant_id: int
    parent_id: int | None
    account_id: int | None
    code: str
    kind: str
    utility: str | None
    address: str | None
    latitude: float | None
    longitude: float | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class CommDevice:
    """A gateway, data concentrator or modem that meters talk through."""

    id: int
    tenant_id: int
    parent_id: int | None
    ident: str
    kind: str
    model: str
    protocol: str
    address: str | None
    status: str
    key_ref: str | None
    last_seen_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Meter:
    id: int
    tenant_id: int
    serial: str
    manufacturer: str
    model: str
    medium: str
    protocol: str
    multiplier: Decimal
    dials: int | None
    firmware: str | None
    status: str
    comm_device_id: int | None
    installed_at: datetime | None
    removed_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MeterInstallation:
    id: int
    tenant_id: int
    meter_id: int
    service_point_id: int
    installed_at: datetime
    removed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    tenant_id: int
    meter_id: int
    code: str
    kind: Literal["interval", "register"]
    unit: str
    interval_s: int | None
    direction: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    tenant_id: int
    meter_id: int | None
    comm_device_id: int | None
    ts: datetime
    code: str
    severity: str
    state: str
    source: str
    detail: dict[str, Any]
    dedup_key: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class MeterRoute:
    """One period of a meter's route: reached through ``comm_device_id`` from ``since`` until ``until``
    (None: now), over the mesh ``hops`` (idents from the meter's neighbour to the gateway; [] direct; None
    not reported), with the link ``quality`` the gateway reported (rssi, snr, hops; {} when none)."""

    id: int
    tenant_id: int
    meter_id: int
    comm_device_id: int
    since: datetime
    until: datetime | None
    hops: list[str] | None
    quality: dict[str, Any]
    source: Literal["registration", "gateway"]


@dataclass(frozen=True, slots=True)
class DeviceParent:
    """One period of a device's parent (a concentrator under a gateway), ``until`` None: now."""

    id: int
    tenant_id: int
    comm_device_id: int
    parent_id: int
    since: datetime
    until: datetime | None
