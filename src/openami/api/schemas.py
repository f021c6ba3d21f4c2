"""Request bodies and list filters, with the database's limits as validation rules.

Every string has the length of its column (SQLite would not enforce it, PostgreSQL would fail with a
500) and refuses control characters (PostgreSQL cannot store NUL; the others have no business in a
serial number). Ids are positive BIGINTs. Bodies forbid unknown fields, so ``tenant_id`` or ``id`` in a
body is an error rather than silently ignored. Filter fields are named after the columns they filter.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from openami.api.pagination import ListQuery
from openami.bus.messages import DEVICE_ID_PATTERN, TENANT_SLUG_PATTERN
from openami.tz import check_timezone

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("control characters are not allowed")
    return value


_Clean = AfterValidator(_no_control_characters)


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("datetime out of range when converted to UTC") from None


#: An instant: ISO-8601 with an offset (naive times are refused), normalised to UTC.
Instant = Annotated[AwareDatetime, AfterValidator(_in_utc)]

Id = Annotated[int, Field(ge=1, le=2**63 - 1)]
Key64 = Annotated[str, StringConstraints(min_length=1, max_length=64), _Clean]
Name200 = Annotated[str, StringConstraints(min_length=1, max_length=200), _Clean]
Label120 = Annotated[str, StringConstraints(max_length=120), _Clean]
Address = Annotated[str, StringConstraints(max_length=2000), _Clean]
DeviceId = Annotated[str, StringConstraints(pattern=DEVICE_ID_PATTERN)]
Slug16 = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,15}$")]
Slug32 = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")]
Email = Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
Phone = Annotated[str, StringConstraints(max_length=32, pattern=r"^[0-9+()./ -]+$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Utility = Literal["electricity", "water", "gas", "heat"]
ServicePointKind = Literal["building", "apartment", "premise", "point"]
GatewayKind = Literal["gateway", "concentrator", "modem"]
Severity = Literal["info", "warning", "alarm"]  # as in openami.bus.messages


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantIn(Body):
    slug: Annotated[str, StringConstraints(pattern=TENANT_SLUG_PATTERN)]
    name: Name200
    timezone: Annotated[str, StringConstraints(max_length=64), AfterValidator(check_timezone)] = "UTC"
    currency: Currency = "EUR"


class CustomerIn(Body):
    number: Key64
    name: Name200
    kind: Slug16 = "residential"
    email: Email | None = None
    phone: Phone | None = None
    address: Address | None = None


class CustomerQuery(ListQuery):
    number: Key64 | None = None
    kind: Slug16 | None = None


class AccountIn(Body):
    customer_id: Id
    number: Key64
    status: Slug16 = "active"
    currency: Currency = "EUR"
    billing_address: Address | None = None


class AccountQuery(ListQuery):
    number: Key64 | None = None
    customer_id: Id | None = None
    status: Slug16 | None = None


class ServicePointIn(Body):
    code: Key64
    kind: ServicePointKind = "point"
    utility: Utility | None = None
    parent_id: Id | None = None
    account_id: Id | None = None
    address: Address | None = None
    latitude: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)] | None = None


class ServicePointQuery(ListQuery):
    code: Key64 | None = None
    account_id: Id | None = None
    parent_id: Id | None = None
    kind: ServicePointKind | None = None
    utility: Utility | None = None


class GatewayIn(Body):
    ident: DeviceId
    kind: GatewayKind = "gateway"
    model: Label120 = ""
    protocol: Slug32 = "mqtt-json"
    address: Annotated[str, StringConstraints(max_length=255), _Clean] | None = None
    parent_id: Id | None = None
    status: Slug16 = "active"
    key_ref: Label120 | None = None


class GatewayQuery(ListQuery):
    ident: Key64 | None = None
    kind: GatewayKind | None = None
    status: Slug16 | None = None
    parent_id: Id | None = None


class PendingDeviceQuery(ListQuery):
    """GET /gateways/pending-devices: devices gateways discovered, by status and gateway."""

    status: Literal["pending", "approved", "rejected"] | None = None
    gateway_id: Id | None = None


class MeterIn(Body):
    serial: Key64
    manufacturer: Label120 = ""
    model: Label120 = ""
    medium: Utility
    protocol: Slug32
    multiplier: Annotated[Decimal, Field(gt=0, max_digits=12, decimal_places=6)] = Decimal(1)
    dials: Annotated[int, Field(ge=1, le=32)] | None = None
    firmware: Key64 | None = None
    status: Slug16 = "active"
    comm_device_id: Id | None = None


class MeterQuery(ListQuery):
    serial: Key64 | None = None
    medium: Utility | None = None
    status: Slug16 | None = None
    comm_device_id: Id | None = None


class ChannelQuery(ListQuery):
    meter_id: Id | None = None
    code: Key64 | None = None
    kind: Literal["interval", "register"] | None = None


class InstallationIn(Body):
    service_point_id: Id
    installed_at: Instant


class EventQuery(ListQuery):
    meter_id: Id | None = None
    severity: Severity | None = None
    since: Instant | None = Field(None, description="Only events with ts >= since.")
    until: Instant | None = Field(None, description="Only events with ts < until.")


class HistoryQuery(ListQuery):
    """GET /meters/{id}/routes, /gateways/{id}/parents: the periods overlapping [since, until)."""

    since: Instant | None = Field(None, description="Only periods still running at or after since.")
    until: Instant | None = Field(None, description="Only periods that began before until.")


class ReadingsQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Instant = Field(description="Inclusive; ISO-8601 with an offset (Z or +hh:mm).")
    end: Instant = Field(description="Exclusive; ISO-8601 with an offset.")
    limit: int = Field(1000, ge=1, description="Timestamps per page; capped at 1000.")
    cursor: str | None = Field(None, max_length=200)
    all_versions: bool = Field(False, description="Every stored version of each reading, oldest first.")


class LoginIn(Body):
    tenant: Annotated[str, StringConstraints(min_length=1, max_length=64), _Clean]
    username: Annotated[str, StringConstraints(min_length=1, max_length=120), _Clean]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)]
