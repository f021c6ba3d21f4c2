"""The repository of every tenant-owned resource, and the tenants themselves.

Each resource is the generic ``Repository`` configured with its table, row type, natural key, the
columns that must point into the same tenant, and how its rows belong to a customer. The customer
chain is account.customer_id -> service_point.account_id -> open meter_installation -> meter -> channel:
a customer sees the meters currently installed at their service points, and those meters' channels.

Meters and gateways are subclasses that also keep the topology's history (``topology``): a write that
sets a meter's ``comm_device_id`` or a device's ``parent_id`` closes the open history row and opens the
next, in the writer's transaction (so together with the audit entry the API writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, select

from openami.store.errors import Conflict, NotFound
from openami.store.repositories import topology
from openami.store.repositories.base import (
    OwnerCondition,
    Repository,
    Scope,
    clamp_limit,
    insert_returning,
)
from openami.store.repositories.models import (
    Account,
    Channel,
    CommDevice,
    Customer,
    Meter,
    MeterInstallation,
    ServicePoint,
    Tenant,
)
from openami.store.schema import (
    account,
    channel,
    comm_device,
    customer,
    meter,
    meter_installation,
    service_point,
    tenant,
)


def accounts_of(customer_id: int) -> Select[Any]:
    """Ids of the customer's accounts."""
    return select(account.c.id).where(account.c.customer_id == customer_id)


def service_points_of(customer_id: int) -> Select[Any]:
    """Ids of the service points held by the customer's accounts."""
    return select(service_point.c.id).where(service_point.c.account_id.in_(accounts_of(customer_id)))


def meters_of(customer_id: int) -> Select[Any]:
    """Ids of the meters installed now (no removal yet) at the customer's service points."""
    return select(meter_installation.c.meter_id).where(
        meter_installation.c.service_point_id.in_(service_points_of(customer_id)),
        meter_installation.c.removed_at.is_(None),
    )


def _own_meter(column: ColumnElement[Any]) -> OwnerCondition:
    """Ownership through the meter: the row's meter is installed at one of the customer's points."""

    def condition(customer_id: int) -> ColumnElement[bool]:
        return column.in_(meters_of(customer_id))

    return condition


customers: Repository[Customer] = Repository(
    customer,
    Customer,
    name="customer",
    natural_key="number",
    owned_by=lambda cid: customer.c.id == cid,
    filterable=["number", "kind"],
)
accounts: Repository[Account] = Repository(
    account,
    Account,
    name="account",
    natural_key="number",
    references={"customer_id": customer},
    owned_by=lambda cid: account.c.customer_id == cid,
    filterable=["number", "customer_id", "status"],
)
service_points: Repository[ServicePoint] = Repository(
    service_point,
    ServicePoint,
    name="service point",
    natural_key="code",
    references={"parent_id": service_point, "account_id": account},
    owned_by=lambda cid: service_point.c.id.in_(service_points_of(cid)),
    filterable=["code", "account_id", "parent_id", "kind", "utility"],
)


class CommDeviceRepository(Repository[CommDevice]):
    """Gateways, concentrators and modems; ``parent_id`` changes go into ``device_parent`` and may not
    put a device under itself."""

    def create(self, conn: Connection, tenant_id: int, values: Mapping[str, Any]) -> CommDevice:
        row = super().create(conn, tenant_id, values)
        if row.parent_id is not None:
            topology.record_parent(conn, tenant_id, row.id, row.parent_id, datetime.now(UTC))
        return row

    def update(self, conn: Connection, scope: Scope, row_id: int, values: Mapping[str, Any]) -> CommDevice:
        parent_id = values.get("parent_id")
        if parent_id is not None:
            self.get(conn, scope, row_id)  # NotFound first, as for any other change
            topology.check_parent(conn, scope.tenant_id, row_id, parent_id)
        row = super().update(conn, scope, row_id, values)
        if "parent_id" in values:
            topology.record_parent(conn, scope.tenant_id, row.id, row.parent_id, datetime.now(UTC))
        return row


class MeterRepository(Repository[Meter]):
    """Meters; ``comm_device_id`` changes go into ``meter_route`` (source ``registration``)."""

    def create(self, conn: Connection, tenant_id: int, values: Mapping[str, Any]) -> Meter:
        row = super().create(conn, tenant_id, values)
        if row.comm_device_id is not None:
            topology.record_registration(conn, tenant_id, row.id, row.comm_device_id, datetime.now(UTC))
        return row

    def update(self, conn: Connection, scope: Scope, row_id: int, values: Mapping[str, Any]) -> Meter:
        row = super().update(conn, scope, row_id, values)
        if "comm_device_id" in values:
            at = datetime.now(UTC)
            topology.record_registration(conn, scope.tenant_id, row.id, row.comm_device_id, at)
        return row


comm_devices = CommDeviceRepository(
    comm_device,
    CommDevice,
    name="gateway",
    natural_key="ident",
    references={"parent_id": comm_device},
    filterable=["ident", "kind", "status", "parent_id"],
)
meters = MeterRepository(
    meter,
    Meter,
    name="meter",
    natural_key="serial",
    references={"comm_device_id": comm_device},
    owned_by=_own_meter(meter.c.id),
    filterable=["serial", "medium", "status", "comm_device_id"],
)
channels: Repository[Channel] = Repository(
    channel,
    Channel,
    name="channel",
    references={"meter_id": meter},
    owned_by=_own_meter(channel.c.meter_id),
    filterable=["meter_id", "code", "kind"],
)
installations: Repository[MeterInstallation] = Repository(
    meter_installation,
    MeterInstallation,
    name="meter installation",
    references={"meter_id": meter, "service_point_id": service_point},
    owned_by=_own_meter(meter_installation.c.meter_id),
    filterable=["meter_id", "service_point_id"],
)


def install_meter(
    conn: Connection, tenant_id: int, meter_id: int, service_point_id: int, installed_at: datetime
) -> MeterInstallation:
    """Record that a meter was installed at a service point; a meter is in one place at a time."""
    still_open = meter_installation.c.removed_at.is_(None)
    current = installations.list(conn, Scope(tenant_id), filters={"meter_id": meter_id}, where=[still_open])
    if current:
        raise Conflict(f"meter {meter_id} is installed at service point {current[0].service_point_id}")
    values = {"meter_id": meter_id, "service_point_id": service_point_id, "installed_at": installed_at}
    return installations.create(conn, tenant_id, values)


class TenantRepository:
    """Tenants are the isolation boundary itself, so their queries are scoped by id, not by tenant_id."""

    def get(self, conn: Connection, tenant_id: int) -> Tenant:
        row = conn.execute(select(tenant).where(tenant.c.id == tenant_id)).first()
        if row is None:
            raise NotFound(f"tenant {tenant_id} not found")
        return Tenant(**row._mapping)

    def get_by_slug(self, conn: Connection, slug: str) -> Tenant:
        row = conn.execute(select(tenant).where(tenant.c.slug == slug)).first()
        if row is None:
            raise NotFound(f"tenant {slug!r} not found")
        return Tenant(**row._mapping)

    def list(
        self,
        conn: Connection,
        *,
        only_id: int | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[Tenant]:
        """All tenants (platform administration) or, with ``only_id``, just that one, in id order."""
        query = select(tenant)
        if only_id is not None:
            query = query.where(tenant.c.id == only_id)
        if after_id is not None:
            query = query.where(tenant.c.id > after_id)
        rows = conn.execute(query.order_by(tenant.c.id).limit(clamp_limit(limit)))
        return [Tenant(**row._mapping) for row in rows]

    def create(self, conn: Connection, values: dict[str, Any]) -> Tenant:
        """Create a tenant; Conflict when the slug is taken."""
        return Tenant(**insert_returning(conn, tenant, values, "tenant"))


tenants = TenantRepository()
