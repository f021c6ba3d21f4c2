"""Roles and permissions, as data.

The matrix lives here and nowhere else: routes ask for a permission string (``require("meters:read")``),
never for a role, so changing what a role may do is a one-line change in ``ROLES`` that the docs table
(``docs/security.md``, checked by a test) and every route follow. Permissions are ``<resource>:<read|write>``.

``own_customer_only`` is a scope, not a permission: a customer login holds ``meters:read`` like an
operator does, but every query it makes is narrowed to its own customer's rows
(``openami.store.repositories.Scope``).

``tenants:write`` (creating tenants) belongs to no role: it is granted only to users flagged
``is_platform_admin``, because tenant administration crosses the isolation boundary every role is
confined to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from openami.security.errors import InvalidInput

RESOURCES = (
    "meters",
    "readings",
    "customers",
    "accounts",
    "service_points",
    "gateways",
    "events",
    "users",
    "tenants",
    "audit",
    "commands",
    "billing",
    "uplinks",
    "jobs",
    "schedules",
    "kpis",
)

#: Every permission that exists. Some resources have only one direction (readings are written by ingest,
#: not by people; the audit log is written by the system; gateways push uplinks, nobody reads them back;
#: KPIs are counted from the jobs, not written).
PERMISSIONS: frozenset[str] = frozenset(
    {f"{r}:{a}" for r in RESOURCES for a in ("read", "write")}
    - {"readings:write", "audit:write", "uplinks:read", "kpis:write"}
)

#: Granted on top of the role to users with ``is_platform_admin``.
PLATFORM_ADMIN_PERMISSIONS: frozenset[str] = frozenset({"tenants:read", "tenants:write"})


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    description: str
    permissions: frozenset[str]
    own_customer_only: bool = False


def _perms(*names: str) -> frozenset[str]:
    unknown = set(names) - PERMISSIONS
    if unknown:
        raise ValueError(f"unknown permissions {sorted(unknown)}")
    return frozenset(names)


_READ_ALL = frozenset(p for p in PERMISSIONS if p.endswith(":read"))

ROLES: Mapping[str, Role] = MappingProxyType(
    {
        role.name: role
        for role in (
            Role(
                "admin",
                "Tenant administrator: everything inside the tenant, including users.",
                PERMISSIONS - {"tenants:write"},
            ),
            Role(
                "operator",
                "Network operations: meters, gateways, service points, events and remote commands.",
                _perms(
                    "meters:read",
                    "meters:write",
                    "readings:read",
                    "customers:read",
                    "accounts:read",
                    "service_points:read",
                    "service_points:write",
                    "gateways:read",
                    "gateways:write",
                    "events:read",
                    "events:write",
                    "commands:read",
                    "commands:write",
                    "tenants:read",
                    "jobs:read",
                    "jobs:write",
                    "schedules:read",
                    "schedules:write",
                    "kpis:read",
                ),
            ),
            Role(
                "billing",
                "Billing clerk: customers, accounts, tariffs and bills; reads consumption.",
                _perms(
                    "customers:read",
                    "customers:write",
                    "accounts:read",
                    "accounts:write",
                    "service_points:read",
                    "meters:read",
                    "readings:read",
                    "events:read",
                    "billing:read",
                    "billing:write",
                    "tenants:read",
                ),
            ),
            Role(
                "field_technician",
                "Installs and replaces meters and gateways on site; no customer or billing data.",
                _perms(
                    "meters:read",
                    "meters:write",
                    "gateways:read",
                    "gateways:write",
                    "service_points:read",
                    "readings:read",
                    "events:read",
                    "commands:write",
                    "tenants:read",
                    "jobs:read",
                    "jobs:write",
                ),
            ),
            Role(
                "analyst",
                "Read-only on the network and its data; no personal data (customers, accounts).",
                _perms(
                    "meters:read",
                    "readings:read",
                    "service_points:read",
                    "gateways:read",
                    "events:read",
                    "tenants:read",
                    "jobs:read",
                    "schedules:read",
                    "kpis:read",
                ),
            ),
            Role(
                "customer",
                "An end customer: reads their own accounts, premises, meters, consumption and bills.",
                _perms(
                    "customers:read",
                    "accounts:read",
                    "service_points:read",
                    "meters:read",
                    "readings:read",
                    "billing:read",
                ),
                own_customer_only=True,
            ),
            Role(
                "gateway",
                "A third-party gateway or concentrator: pushes its uplinks (POST /uplinks), nothing else.",
                _perms("uplinks:write"),
            ),
            Role(
                "auditor",
                "Reads everything, including the audit log and users; changes nothing.",
                _READ_ALL,
            ),
        )
    }
)


def get_role(name: str) -> Role:
    """The role called ``name``; InvalidInput for a name that is not in the matrix."""
    try:
        return ROLES[name]
    except KeyError:
        raise InvalidInput(f"unknown role {name!r}; known roles: {', '.join(ROLES)}") from None


def permissions_for(role: str, *, is_platform_admin: bool = False) -> frozenset[str]:
    """What a user with ``role`` (and possibly the platform flag) may do."""
    granted = get_role(role).permissions
    return (granted | PLATFORM_ADMIN_PERMISSIONS) if is_platform_admin else granted


def permission_matrix_markdown() -> str:
    """The role x permission table of ``docs/security.md`` (a test keeps the doc equal to this)."""
    names = list(ROLES)
    lines = [
        "| permission | " + " | ".join(names) + " |",
        "| --- | " + " | ".join(":-:" for _ in names) + " |",
    ]
    for permission in sorted(PERMISSIONS):
        marks = ["x" if permission in ROLES[n].permissions else "" for n in names]
        lines.append(f"| `{permission}` | " + " | ".join(marks) + " |")
    scoped = ["own" if ROLES[n].own_customer_only else "tenant" for n in names]
    lines.append("| *scope* | " + " | ".join(scoped) + " |")
    return "\n".join(lines)
