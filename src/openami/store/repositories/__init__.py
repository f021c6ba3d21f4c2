"""Repositories: the only code that queries the business tables, always inside one tenant.

Callers pass a ``Scope`` (tenant, and customer for customer principals) to every read and a tenant id to
every write; ``openami.store.repositories.base.Repository`` makes the tenant filter impossible to forget.
Functions take a ``Connection`` so the caller owns the transaction (a mutation and its audit entry
commit together).
"""

from __future__ import annotations

from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from openami.store.repositories.base import DEFAULT_LIMIT, MAX_LIMIT, Repository, Scope, clamp_limit
from openami.store.repositories.catalog import (
    CommDeviceRepository,
    MeterRepository,
    TenantRepository,
    accounts,
    channels,
    comm_devices,
    customers,
    install_meter,
    installations,
    meters,
    service_points,
    tenants,
)
from openami.store.repositories.event_repo import (
    NewEvent,
    event_dedup_key,
    events,
    list_events,
    record_events,
)
from openami.store.repositories.models import (
    Account,
    Channel,
    CommDevice,
    Customer,
    DeviceParent,
    Event,
    Meter,
    MeterInstallation,
    MeterRoute,
    ServicePoint,
    Tenant,
)
from openami.store.repositories.resolver import ChannelKind, resolve_channel


def ping(engine: Engine) -> bool:
    """True when the database answers ``SELECT 1`` (health checks; never raises)."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError:
        return False
    return True


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Account",
    "Channel",
    "ChannelKind",
    "CommDevice",
    "CommDeviceRepository",
    "Customer",
    "DeviceParent",
    "Event",
    "Meter",
    "MeterInstallation",
    "MeterRepository",
    "MeterRoute",
    "NewEvent",
    "Repository",
    "Scope",
    "ServicePoint",
    "Tenant",
    "TenantRepository",
    "accounts",
    "channels",
    "clamp_limit",
    "comm_devices",
    "customers",
    "event_dedup_key",
    "events",
    "install_meter",
    "installations",
    "list_events",
    "meters",
    "ping",
    "record_events",
    "resolve_channel",
    "service_points",
    "tenants",
]
