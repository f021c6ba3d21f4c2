"""What the gateway link keeps in the store: link state per gateway, pending devices, and the API's view.

``gateway_link`` holds, per OpenAMI gateway, its sealed link key (through the key vault), the replay
window of its uplink envelopes, the next downlink sequence number, the last configuration pushed (its
version, its payload sealed like the key since meter entries may carry meter keys, and when it last
went to the broker) and its last health report. ``pending_device`` holds the meters gateways
discovered.

CONFIG delivery is two steps, so that any process can push and a head-end worker with the link can
deliver: :func:`stage_config` counts the version up and keeps the payload as *pending* (also inside a
caller's transaction, as an approval does), then :meth:`GatewayLinkStore.claim_config` hands it to one
sender at a time (it marks it sent and takes a downlink number atomically, so two workers never both
send it); a sender that could not publish puts it back to pending with
:meth:`GatewayLinkStore.unclaim_config`. A claim is due while pending, or again after
``resend_after_s`` while the gateway's HEALTH reports a lower ``config_version``.

Every write that reads state first starts with a write to the same row (``UPDATE ... SET last_seen_at``,
``UPDATE ... RETURNING``), which on SQLite takes the database's write lock before anything is read and
on PostgreSQL locks the row: two head-end workers (a shared MQTT subscription) can hand the same
gateway's envelopes to each other, and a replay window merged by both must contain both numbers.
Accepting a number into the window is a set union, so the order of two merges does not matter.

Blocking (SQLAlchemy): the listener calls it from worker threads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, Engine, select, update

from openami.protocols.edge import ReplayWindow
from openami.protocols.edge.envelope import WINDOW
from openami.security.audit import AuditLog
from openami.security.errors import InvalidInput
from openami.security.keyvault import GATEWAY_KINDS, KeyVault, KeyVaultError
from openami.store.errors import Conflict, NotFound
from openami.store.repositories.base import Scope, dialect_insert
from openami.store.repositories.catalog import comm_devices, meters
from openami.store.repositories.models import Meter
from openami.store.repositories.topology import subtree
from openami.store.schema import (
    PENDING_DEVICE_STATUSES,
    comm_device,
    gateway_link,
    meter,
    pending_device,
    tenant,
)

__all__ = [
    "MAX_STORED_SEQ",
    "Approval",
    "ClaimedConfig",
    "DiscoveredDevice",
    "GatewayLinkStore",
    "LinkState",
    "LinkStatus",
    "PendingDevice",
    "ProvisionedKey",
    "PushedConfig",
    "StagedConfig",
    "UnknownGateway",
    "approve_pending",
    "carry_keys",
    "config_entries",
    "decide_pending",
    "file_discoveries",
    "gateway_config",
    "get_pending",
    "last_config",
    "link_status",
    "list_pending",
    "provision_key",
    "push_config",
    "reported_config_version",
    "stage_config",
]

MAX_STORED_SEQ: Final = 2**63 - 1
"""Highest uplink sequence number the head-end stores (a signed BIGINT); the envelope allows 2**64-1."""
_MASK_BYTES: Final = WINDOW // 8


def encode_mask(mask: int) -> bytes:
    return (mask & ((1 << WINDOW) - 1)).to_bytes(_MASK_BYTES, "big")


def decode_mask(data: bytes | None) -> int:
    return int.from_bytes(bytes(data or b""), "big")


def merge_window(highest: int, mask: int, seq: int) -> tuple[int, int]:
    """``(highest, mask)`` with ``seq`` accepted, as :meth:`ReplayWindow.accept` would, but bounded: a
    number far ahead (a gateway whose new archive numbers from its creation time) resets the mask
    instead of shifting it by trillions of bits, and one older than the window changes nothing (it
    counts as seen anyway)."""
    if seq > highest:
        shift = seq - highest
        if highest < 0 or shift >= WINDOW:
            return seq, 1
        return seq, ((mask << shift) | 1) & ((1 << WINDOW) - 1)
    if highest - seq < WINDOW:
        return highest, mask | (1 << (highest - seq))
    return highest, mask


class UnknownGateway(Exception):
    """No usable link for an envelope: tenant, gateway or key unknown, or a key that does not open."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class LinkState:
    """One gateway's link as the listener needs it for one envelope."""

    tenant_id: int
    tenant: str
    comm_device_id: int
    gateway: str
    key_version: int
    window: ReplayWindow
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """A device a gateway reported in a DISCOVERY envelope (already validated)."""

    protocol: str
    ident: str
    address: str = ""
    manufacturer: str = ""
    medium: str | None = None


class GatewayLinkStore:
    """The listener's reads and writes (module docstring)."""

    def __init__(self, engine: Engine, vault: KeyVault) -> None:
        self._engine = engine
        self._vault = vault

    def load(self, tenant_slug: str, ident: str) -> LinkState:
        """The link of gateway ``ident`` of tenant ``tenant_slug``; :class:`UnknownGateway` if unusable."""
        query = (
            select(
                tenant.c.id.label("tenant_id"),
                comm_device.c.id.label("comm_device_id"),
                comm_device.c.kind,
                gateway_link.c.key_ciphertext,
                gateway_link.c.key_version,
                gateway_link.c.up_highest,
                gateway_link.c.up_mask,
            )
            .select_from(tenant)
            .join(comm_device, (comm_device.c.tenant_id == tenant.c.id) & (comm_device.c.ident == ident))
            .outerjoin(gateway_link, gateway_link.c.comm_device_id == comm_device.c.id)
            .where(tenant.c.slug == tenant_slug)
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise UnknownGateway(f"no gateway {ident!r} in tenant {tenant_slug!r}")
        if row.kind not in GATEWAY_KINDS:
            raise UnknownGateway(f"device {ident!r} is a {row.kind}, not a gateway or concentrator")
        if row.key_ciphertext is None:
            raise UnknownGateway(f"gateway {ident!r} has no link key (POST /gateways/{{id}}/link/key)")
        try:
            key = self._vault.open_gateway_key(row.tenant_id, row.comm_device_id, row.key_ciphertext)
        except KeyVaultError as exc:
            raise UnknownGateway(f"the link key of gateway {ident!r} does not open: {exc}") from None
        window = ReplayWindow(int(row.up_highest), decode_mask(row.up_mask))
        return LinkState(
            int(row.tenant_id), tenant_slug, int(row.comm_device_id), ident, int(row.key_version), window, key
        )

    def accept(
        self,
        state: LinkState,
        seq: int,
        now: datetime,
        *,
        health: Mapping[str, Any] | None = None,
        discovered: Sequence[DiscoveredDevice] = (),
    ) -> bool:
        """Merge ``seq`` into the stored window, mark the gateway seen, and store what came with it (health,
        discovered devices) in the same transaction. False when the key was rotated meanwhile (the number
        then belongs to the old key's numbering and is not carried over)."""
        if not 0 <= seq <= MAX_STORED_SEQ:
            raise ValueError(f"sequence number {seq} cannot be stored")
        row = self._row(state)
        with self._engine.begin() as conn:
            locked = conn.execute(
                update(gateway_link).where(row).values(last_seen_at=now).returning(gateway_link.c.id)
            ).scalar_one_or_none()
            if locked is None:
                return False
            stored = conn.execute(select(gateway_link.c.up_highest, gateway_link.c.up_mask).where(row)).one()
            highest, mask = merge_window(int(stored.up_highest), decode_mask(stored.up_mask), seq)
            values: dict[str, Any] = {"up_highest": highest, "up_mask": encode_mask(mask)}
            if health is not None:
                values.update(health=dict(health), health_at=now)
            conn.execute(update(gateway_link).where(row).values(**values))
            self._seen(conn, state, now)
            if discovered:
                _upsert_pending(conn, state.tenant_id, state.comm_device_id, discovered, now)
        return True

    def touch(self, state: LinkState, now: datetime) -> None:
        """Mark the gateway seen (an authentic envelope that is not accepted: a duplicate, a refusal)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(gateway_link)
                .where(gateway_link.c.comm_device_id == state.comm_device_id)
                .values(last_seen_at=now)
            )
            self._seen(conn, state, now)

    def next_down_seq(self, state: LinkState) -> int:
        """A downlink sequence number of its own (atomically counted up, never handed out twice)."""
        with self._engine.begin() as conn:
            after = conn.execute(
                update(gateway_link)
                .where(gateway_link.c.comm_device_id == state.comm_device_id)
                .values(next_down_seq=gateway_link.c.next_down_seq + 1)
                .returning(gateway_link.c.next_down_seq)
            ).scalar_one_or_none()
        if after is None:
            raise UnknownGateway(f"gateway {state.gateway!r} lost its link meanwhile")
        return int(after) - 1

    def stage_config(self, state: LinkState, config: Mapping[str, Any]) -> StagedConfig:
        """:func:`stage_config` in a transaction of its own."""
        with self._engine.begin() as conn:
            return stage_config(conn, self._vault, state.tenant_id, state.comm_device_id, config)

    def claim_config(
        self,
        state: LinkState,
        now: datetime,
        *,
        reported: int | None = None,
        resend_after_s: float | None = None,
    ) -> ClaimedConfig | None:
        """The last pushed CONFIG with a fresh downlink number, if it is due, marked sent at ``now``.

        Due: never sent yet (pending), unless the gateway ``reported`` that version already; or, with
        ``resend_after_s``, sent that long ago or longer while the gateway ``reported`` a lower version.
        One atomic UPDATE decides, so of two workers handling the same gateway only one sends it."""
        link = gateway_link.c
        due: ColumnElement[bool] = link.config_sent_at.is_(None)
        if reported is not None:
            if resend_after_s is not None:
                cutoff = now - timedelta(seconds=resend_after_s)
                due = due | (link.config_sent_at <= cutoff)
            due = due & (link.config_version > reported)
        with self._engine.begin() as conn:
            row = conn.execute(
                update(gateway_link)
                .where(link.comm_device_id == state.comm_device_id, link.config_ciphertext.is_not(None), due)
                .values(config_sent_at=now, next_down_seq=link.next_down_seq + 1)
                .returning(link.next_down_seq, link.config_version, link.config_ciphertext)
            ).first()
        if row is None:
            return None
        opened = self._vault.open_gateway_config(state.tenant_id, state.comm_device_id, row.config_ciphertext)
        body = json.loads(opened)
        return ClaimedConfig(int(row.config_version), int(row.next_down_seq) - 1, now, body)

    def unclaim_config(self, state: LinkState, claimed: ClaimedConfig) -> None:
        """Back to pending: ``claimed`` could not be published (unless a newer push replaced it)."""
        with self._engine.begin() as conn:
            conn.execute(
                update(gateway_link)
                .where(
                    gateway_link.c.comm_device_id == state.comm_device_id,
                    gateway_link.c.config_version == claimed.version,
                    gateway_link.c.config_sent_at == claimed.sent_at,
                )
                .values(config_sent_at=None)
            )

    @staticmethod
    def _row(state: LinkState) -> Any:
        return (gateway_link.c.comm_device_id == state.comm_device_id) & (
            gateway_link.c.key_version == state.key_version
        )

    @staticmethod
    def _seen(conn: Connection, state: LinkState, now: datetime) -> None:
        conn.execute(
            update(comm_device).where(comm_device.c.id == state.comm_device_id).values(last_seen_at=now)
        )


@dataclass(frozen=True, slots=True)
class StagedConfig:
    """A CONFIG kept as pending: its version and payload (``version`` included)."""

    version: int
    body: dict[str, Any] = field(repr=False)  # meter entries may carry meter keys


@dataclass(frozen=True, slots=True)
class ClaimedConfig:
    """A CONFIG handed to one sender: the payload to seal under downlink number ``seq``."""

    version: int
    seq: int
    sent_at: datetime
    body: dict[str, Any] = field(repr=False)


def reported_config_version(health: Mapping[str, Any] | None) -> int | None:
    """The ``config_version`` a gateway's HEALTH reports (None: not reported, or not an integer)."""
    value = (health or {}).get("config_version")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def stage_config(
    conn: Connection, vault: KeyVault, tenant_id: int, comm_device_id: int, config: Mapping[str, Any]
) -> StagedConfig:
    """Keep ``config`` as the gateway's next CONFIG, pending delivery, within the caller's transaction.

    The version is one above both the last pushed and the one the gateway last reported (a gateway
    that runs a higher version, from before a database restore, ignores anything not above it), and is
    written into the payload (a ``version`` in ``config`` is replaced). The payload is sealed in the
    key vault. :class:`UnknownGateway` when the gateway has no link (no key yet)."""
    json.dumps(config)  # not JSON: TypeError here, before a version is spent
    link = gateway_link.c
    row = conn.execute(  # a write first: the row (SQLite: the database) is locked before the read
        update(gateway_link)
        .where(link.comm_device_id == comm_device_id, link.tenant_id == tenant_id)
        .values(config_sent_at=None)
        .returning(link.config_version, link.health)
    ).first()
    if row is None:
        raise UnknownGateway(f"gateway {comm_device_id} has no link key yet (POST /gateways/{{id}}/link/key)")
    health = row.health if isinstance(row.health, dict) else None
    version = max(int(row.config_version), reported_config_version(health) or 0) + 1
    body = {**config, "version": version}
    sealed = vault.seal_gateway_config(tenant_id, comm_device_id, json.dumps(body).encode())
    conn.execute(
        update(gateway_link)
        .where(link.comm_device_id == comm_device_id)
        .values(config_version=version, config_ciphertext=sealed)
    )
    return StagedConfig(version, body)


def last_config(
    conn: Connection, vault: KeyVault, tenant_id: int, comm_device_id: int
) -> dict[str, Any] | None:
    """The payload of the last CONFIG pushed to the gateway (opened), or None if none was."""
    sealed = conn.execute(
        select(gateway_link.c.config_ciphertext).where(
            gateway_link.c.comm_device_id == comm_device_id, gateway_link.c.tenant_id == tenant_id
        )
    ).scalar_one_or_none()
    if sealed is None:
        return None
    body = json.loads(vault.open_gateway_config(tenant_id, comm_device_id, sealed))
    return body if isinstance(body, dict) else None


def config_entries(entries: Sequence[Any], *, base: Path | None = None) -> list[dict[str, Any]]:
    """Meter entries checked as the gateway checks a CONFIG's (``openami.edge.config.remote_meters``),
    returned in the form a CONFIG carries: keys inline as hex (``keys.encryption_file`` and the like are
    read here, relative to ``base``), so the gateway needs no files. :class:`InvalidInput` naming the
    first entry the gateway would leave out: pushing a list it would silently shorten helps nobody."""
    from openami.edge.config import remote_meters  # the gateway's own rules, not a copy of them

    resolved = [_with_key_paths(entry, base) for entry in entries]
    usable, refused = remote_meters(resolved)
    if refused:
        name, reason = refused[0]
        more = f" (and {len(refused) - 1} more)" if len(refused) > 1 else ""
        raise InvalidInput(f"meter {name}: {reason}{more}")
    out = []
    for item in usable:
        entry: dict[str, Any] = {
            "serial": item.serial,
            "protocol": item.protocol,
            "address": item.address,
            "model": item.model,
        }
        if item.pulse is not None:
            entry["pulse"] = item.pulse.model_dump(mode="json")
        if item.keys is not None:
            keys = {
                "encryption": item.keys.encryption_key,
                "authentication": item.keys.authentication_key,
                "password": item.keys.lls_password,
            }
            opened = {
                name: value.decode() if name == "password" else value.hex()
                for name, value in keys.items()
                if value is not None
            }
            if opened:
                entry["keys"] = opened
        out.append(entry)
    return out


def _with_key_paths(entry: Any, base: Path | None) -> Any:
    """``keys.*_file`` made absolute against ``base`` (the meter list's own directory)."""
    if base is None or not isinstance(entry, dict) or not isinstance(entry.get("keys"), dict):
        return entry
    keys = dict(entry["keys"])
    for name in ("encryption_file", "authentication_file"):
        if isinstance(keys.get(name), str) and not Path(keys[name]).is_absolute():
            keys[name] = str(base / keys[name])
    return {**entry, "keys": keys}


def _upsert_pending(
    conn: Connection, tenant_id: int, device_id: int, devices: Sequence[DiscoveredDevice], now: datetime
) -> None:
    """New devices are filed as pending; known ones get their details and last_seen_at refreshed, and
    keep their status (a rejected device reported again stays rejected)."""
    for device in devices:
        statement = dialect_insert(conn, pending_device).values(
            tenant_id=tenant_id,
            comm_device_id=device_id,
            protocol=device.protocol,
            ident=device.ident,
            address=device.address,
            manufacturer=device.manufacturer,
            medium=device.medium,
            first_seen_at=now,
            last_seen_at=now,
            status="pending",
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["comm_device_id", "protocol", "ident"],
                set_={
                    "address": statement.excluded.address,
                    "manufacturer": statement.excluded.manufacturer,
                    "medium": statement.excluded.medium,
                    "last_seen_at": statement.excluded.last_seen_at,
                },
            )
        )


def file_discoveries(
    engine: Engine, tenant_slug: str, gateway: str, devices: Sequence[DiscoveredDevice], seen_at: datetime
) -> bool:
    """File devices a gateway heard (wM-Bus installation telegrams it forwarded) as pending, as a
    DISCOVERY envelope would. False when the gateway is not registered in the tenant (nothing filed:
    an operator can only approve what a known gateway reached). Blocking."""
    with engine.begin() as conn:
        row = conn.execute(
            select(comm_device.c.id, comm_device.c.tenant_id)
            .join(tenant, tenant.c.id == comm_device.c.tenant_id)
            .where(tenant.c.slug == tenant_slug, comm_device.c.ident == gateway)
        ).first()
        if row is None:
            return False
        _upsert_pending(conn, int(row.tenant_id), int(row.id), devices, seen_at)
    return True


# -- the API's view ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkStatus:
    """GET /gateways/{id}/link: what an operator sees of a gateway's link (never the key)."""

    gateway_id: int
    ident: str
    key_present: bool
    key_version: int | None
    key_created_at: datetime | None
    last_seen_at: datetime | None
    health: dict[str, Any] | None
    health_at: datetime | None
    backlog_readings: int | None
    unacked_batches: int | None
    window_highest: int | None
    next_downlink_seq: int | None
    config_version: int | None
    """The last configuration version pushed (0: none yet, the gateway runs its local file)."""
    config_reported_version: int | None = None
    """The ``config_version`` the gateway's last HEALTH reported (null: none reported)."""
    config_sent_at: datetime | None = None
    """When the last pushed version last went to the broker (null: not yet, the broker was away)."""
    config_pending: bool = False
    """A pushed version the gateway has not reported yet: the head-end keeps sending it (the
    ``gateway_link_config_resend_s`` setting apart) until a HEALTH reports it."""


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def link_status(conn: Connection, scope: Scope, gateway_id: int) -> LinkStatus:
    """The link of gateway ``gateway_id`` in ``scope``; NotFound for another tenant's or no gateway."""
    device = comm_devices.get(conn, scope, gateway_id)
    row = conn.execute(
        select(
            gateway_link.c.key_version,
            gateway_link.c.key_created_at,
            gateway_link.c.up_highest,
            gateway_link.c.next_down_seq,
            gateway_link.c.config_version,
            gateway_link.c.config_sent_at,
            gateway_link.c.health,
            gateway_link.c.health_at,
        ).where(gateway_link.c.comm_device_id == device.id, gateway_link.c.tenant_id == scope.tenant_id)
    ).first()
    if row is None:
        return LinkStatus(
            gateway_id=device.id,
            ident=device.ident,
            key_present=False,
            key_version=None,
            key_created_at=None,
            last_seen_at=device.last_seen_at,
            health=None,
            health_at=None,
            backlog_readings=None,
            unacked_batches=None,
            window_highest=None,
            next_downlink_seq=None,
            config_version=None,
        )
    health = dict(row.health) if isinstance(row.health, dict) else None
    reported = reported_config_version(health)
    pushed = int(row.config_version)
    return LinkStatus(
        gateway_id=device.id,
        ident=device.ident,
        key_present=True,
        key_version=int(row.key_version),
        key_created_at=row.key_created_at,
        last_seen_at=device.last_seen_at,
        health=health,
        health_at=row.health_at,
        backlog_readings=_int_or_none((health or {}).get("backlog_readings")),
        unacked_batches=_int_or_none((health or {}).get("unacked_batches")),
        window_highest=None if row.up_highest < 0 else int(row.up_highest),
        next_downlink_seq=int(row.next_down_seq),
        config_version=pushed,
        config_reported_version=reported,
        config_sent_at=row.config_sent_at,
        config_pending=pushed > 0 and (reported is None or reported < pushed),
    )


@dataclass(frozen=True, slots=True)
class ProvisionedKey:
    """A freshly generated link key: shown to the caller once, never stored in clear."""

    gateway_id: int
    ident: str
    key_version: int
    key: bytes = field(repr=False)


def provision_key(
    engine: Engine,
    vault: KeyVault,
    audit: AuditLog,
    scope: Scope,
    gateway_id: int,
    actor: str,
) -> ProvisionedKey:
    """Generate, store and audit a new link key for the gateway (a rotation if it had one), atomically.

    The audit entry records who, which gateway and the new key version, never the key.
    """
    key = KeyVault.new_gateway_key()
    with engine.begin() as conn:
        device = comm_devices.get(conn, scope, gateway_id)
        if device.kind not in GATEWAY_KINDS:
            raise InvalidInput(
                f"device {gateway_id} is a {device.kind}: only gateways and concentrators link"
            )
        version = vault.store_gateway_key(scope.tenant_id, device.id, key, conn=conn)
        audit.append(
            conn,
            scope.tenant_id,
            actor,
            "gateway.link_key",
            "gateway",
            device.id,
            {"ident": device.ident, "key_version": version, "rotated": version > 1},
        )
    return ProvisionedKey(device.id, device.ident, version, key)


@dataclass(frozen=True, slots=True)
class PendingDevice:
    id: int
    gateway_id: int
    protocol: str
    address: str
    ident: str
    manufacturer: str
    medium: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    status: str
    decided_at: datetime | None
    decided_by: str | None


_PENDING_COLUMNS = (
    pending_device.c.id,
    pending_device.c.comm_device_id.label("gateway_id"),
    pending_device.c.protocol,
    pending_device.c.address,
    pending_device.c.ident,
    pending_device.c.manufacturer,
    pending_device.c.medium,
    pending_device.c.first_seen_at,
    pending_device.c.last_seen_at,
    pending_device.c.status,
    pending_device.c.decided_at,
    pending_device.c.decided_by,
)


def list_pending(
    conn: Connection,
    scope: Scope,
    *,
    status: str | None = None,
    gateway_id: int | None = None,
    after_id: int | None = None,
    limit: int = 100,
) -> list[PendingDevice]:
    """Discovered devices of the tenant, by id (arrival order), optionally of one status or gateway."""
    query = select(*_PENDING_COLUMNS).where(pending_device.c.tenant_id == scope.tenant_id)
    if status is not None:
        query = query.where(pending_device.c.status == status)
    if gateway_id is not None:
        query = query.where(pending_device.c.comm_device_id == gateway_id)
    if after_id is not None:
        query = query.where(pending_device.c.id > after_id)
    rows = conn.execute(query.order_by(pending_device.c.id).limit(limit)).all()
    return [PendingDevice(**row._mapping) for row in rows]


def decide_pending(
    engine: Engine,
    audit: AuditLog,
    scope: Scope,
    pending_id: int,
    status: str,
    actor: str,
    *,
    now: datetime | None = None,
) -> PendingDevice:
    """Approve or reject a discovered device (status change and audit entry, one transaction).

    This records the decision only; the API approves with :func:`approve_pending`, which also creates
    the meter and updates the gateway's configuration.
    Deciding again is allowed (a rejected device may be approved later); deciding the same way
    twice is a no-op without a second audit entry.
    """
    if status not in PENDING_DEVICE_STATUSES or status == "pending":
        raise ValueError(f"a decision is 'approved' or 'rejected', not {status!r}")
    when = now or datetime.now(UTC)
    row = (pending_device.c.id == pending_id) & (pending_device.c.tenant_id == scope.tenant_id)
    with engine.begin() as conn:
        current = conn.execute(select(pending_device.c.status).where(row)).scalar_one_or_none()
        if current is None:
            raise NotFound(f"pending device {pending_id} not found")
        if current != status:
            changed = conn.execute(
                update(pending_device)
                .where(row, pending_device.c.status == current)
                .values(status=status, decided_at=when, decided_by=actor[:160])
            ).rowcount
            if changed != 1:
                raise Conflict(f"pending device {pending_id} was decided meanwhile")
            action = "pending_device.approve" if status == "approved" else "pending_device.reject"
            audit.append(
                conn,
                scope.tenant_id,
                actor,
                action,
                "pending_device",
                pending_id,
                {"from": current, "to": status},
            )
        device = conn.execute(select(*_PENDING_COLUMNS).where(row)).one()
    return PendingDevice(**device._mapping)


@dataclass(frozen=True, slots=True)
class Approval:
    """An approved discovered device: the meter created for it, the device carrying its address (a
    ``modem`` entry under the gateway) and the CONFIG staged for the gateway (None: it has no link)."""

    pending: PendingDevice
    meter: Meter
    device_id: int
    config: StagedConfig | None


_IDENT_JUNK = re.compile(r"[^A-Za-z0-9_.-]")


def _port_ident(gateway: str, serial: str) -> str:
    """The ident of the device entry that carries an approved meter's address: ``{gateway}.{serial}``,
    characters an ident cannot hold replaced, cut to 64."""
    return _IDENT_JUNK.sub("_", f"{gateway}.{serial}")[:64]


def get_pending(conn: Connection, scope: Scope, pending_id: int) -> PendingDevice:
    """One discovered device of the tenant; NotFound otherwise (also for another tenant's)."""
    row = conn.execute(
        select(*_PENDING_COLUMNS).where(
            pending_device.c.id == pending_id, pending_device.c.tenant_id == scope.tenant_id
        )
    ).first()
    if row is None:
        raise NotFound(f"pending device {pending_id} not found")
    return PendingDevice(**row._mapping)


def approve_pending(
    engine: Engine,
    vault: KeyVault,
    audit: AuditLog,
    scope: Scope,
    pending_id: int,
    actor: str,
    *,
    meter_values: Mapping[str, Any],
    address: str | None = None,
    keys: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> Approval:
    """Approve a discovered device and commission it, all in one transaction (nothing half-done):

    - a ``modem`` device entry ``{gateway}.{serial}`` under the gateway carrying the meter's address
      (``address``, else the one the gateway reported): that is where the registry keeps addresses;
    - the meter (``meter_values``: the fields of ``POST /meters``, validated by the caller) on it;
    - the status change and one audit entry (meter, device and configuration version, never keys);
    - the gateway's next CONFIG, staged as pending: the last one pushed with this meter added (or the
      registry's meter list when none was pushed yet), the meter's ``keys`` inline.

    The meter entry is first checked as the gateway will check it (:func:`config_entries`), so an
    unusable address is an :class:`InvalidInput` here, not a meter the gateway silently skips.
    :class:`Conflict` for a device approved already or a serial (or device ident) that exists; the
    caller delivers the CONFIG after the commit."""
    when = now or datetime.now(UTC)
    with engine.begin() as conn:
        current = get_pending(conn, scope, pending_id)
        if current.status == "approved":
            raise Conflict(f"pending device {pending_id} is approved already")
        serial = str(meter_values["serial"])
        existing = conn.execute(
            select(meter.c.id).where(meter.c.tenant_id == scope.tenant_id, meter.c.serial == serial)
        ).scalar_one_or_none()
        if existing is not None:
            raise Conflict(
                f"a meter with serial {serial!r} exists already (meter {existing}): approve it under "
                "another serial, or attach that meter to the gateway"
            )
        where = address or current.address
        if not where:
            raise InvalidInput(f"pending device {pending_id} reported no address: give one ('address')")
        protocol = str(meter_values["protocol"])
        wanted: dict[str, Any] = {
            "serial": serial,
            "protocol": protocol,
            "address": where,
            "model": meter_values.get("model", ""),
        }
        if keys:
            wanted["keys"] = dict(keys)
        (entry,) = config_entries([wanted])
        gateway = comm_devices.get(conn, scope, current.gateway_id)
        port = comm_devices.create(
            conn,
            scope.tenant_id,
            {
                "ident": _port_ident(gateway.ident, serial),
                "kind": "modem",
                "parent_id": gateway.id,
                "address": where,
                "protocol": protocol,
            },
        )
        created = meters.create(conn, scope.tenant_id, {**meter_values, "comm_device_id": port.id})
        conn.execute(
            update(pending_device)
            .where(pending_device.c.id == pending_id)
            .values(status="approved", decided_at=when, decided_by=actor[:160])
        )
        staged = None
        has_link = conn.execute(
            select(gateway_link.c.id).where(gateway_link.c.comm_device_id == gateway.id)
        ).first()
        if has_link is not None:
            last = last_config(conn, vault, scope.tenant_id, gateway.id)
            if last is None:
                listed = gateway_config(conn, scope, gateway.id).meters
                config: dict[str, Any] = {}
            else:
                listed = [m for m in last.get("meters", []) if isinstance(m, dict)]
                config = {k: v for k, v in last.items() if k != "version"}
            config["meters"] = [m for m in listed if m.get("serial") != serial] + [entry]
            staged = stage_config(conn, vault, scope.tenant_id, gateway.id, config)
        audit.append(
            conn,
            scope.tenant_id,
            actor,
            "pending_device.approve",
            "pending_device",
            pending_id,
            {
                "from": current.status,
                "to": "approved",
                "meter_id": created.id,
                "serial": serial,
                "device_id": port.id,
                "config_version": None if staged is None else staged.version,
            },
        )
        approved = get_pending(conn, scope, pending_id)
    return Approval(approved, created, port.id, staged)


def carry_keys(entries: Sequence[dict[str, Any]], last: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """``entries`` (the registry's meter list) with each meter's ``keys`` from the last CONFIG pushed,
    where it had some: the registry does not hold them, and a push must not drop them."""
    known = {
        m.get("serial"): m["keys"]
        for m in (last or {}).get("meters", [])
        if isinstance(m, dict) and isinstance(m.get("keys"), dict)
    }
    return [{**e, "keys": known[e["serial"]]} if e["serial"] in known else e for e in entries]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """What a CONFIG envelope tells a gateway: the meters it reads and, optionally, how often."""

    gateway_id: int
    ident: str
    meters: list[dict[str, str]]
    skipped: list[str]
    """Serials of meters under the gateway that have no address on their device (nothing to read)."""


def gateway_config(conn: Connection, scope: Scope, gateway_id: int) -> GatewayConfig:
    """The meter list of a gateway as the registry has it: every active meter whose device (a modem or
    converter entry carrying the meter's address, ``mbus+serial://...``) hangs below the gateway."""
    device = comm_devices.get(conn, scope, gateway_id)
    if device.kind not in GATEWAY_KINDS:
        raise InvalidInput(f"device {gateway_id} is a {device.kind}: only gateways and concentrators link")
    tree = subtree(scope.tenant_id, device.id)
    rows = conn.execute(
        select(meter.c.serial, meter.c.protocol, meter.c.model, comm_device.c.address, comm_device.c.id)
        .join(comm_device, comm_device.c.id == meter.c.comm_device_id)
        .where(
            meter.c.tenant_id == scope.tenant_id,
            meter.c.status == "active",
            meter.c.comm_device_id.in_(select(tree.c.id)),
        )
        .order_by(meter.c.serial)
    ).all()
    meters, skipped = [], []
    for row in rows:
        if row.id == device.id or not row.address:
            skipped.append(row.serial)  # on the gateway itself, or no address: the gateway cannot poll it
            continue
        meters.append(
            {"serial": row.serial, "protocol": row.protocol, "address": row.address, "model": row.model or ""}
        )
    return GatewayConfig(device.id, device.ident, meters, skipped)


@dataclass(frozen=True, slots=True)
class PushedConfig:
    """A CONFIG staged for a gateway: its version and what it lists."""

    gateway_id: int
    ident: str
    version: int
    meters: int
    skipped: list[str]


def push_config(
    conn: Connection,
    vault: KeyVault,
    audit: AuditLog,
    scope: Scope,
    gateway_id: int,
    actor: str,
    *,
    meters: list[dict[str, Any]] | None = None,
    poll_interval_s: int | None = None,
) -> PushedConfig:
    """Stage the gateway's next CONFIG (pending delivery, :func:`stage_config`) and audit it
    (``gateway.config_pushed``, without keys), in the caller's transaction.

    ``meters``: the list to send, already checked (:func:`config_entries`); None: the registry's list
    (:func:`gateway_config`) with each meter's keys carried over from the last CONFIG pushed.
    :class:`UnknownGateway` when the gateway has no link key yet."""
    registry = gateway_config(conn, scope, gateway_id)
    if meters is None:
        meters = carry_keys(registry.meters, last_config(conn, vault, scope.tenant_id, registry.gateway_id))
        skipped = registry.skipped
    else:
        skipped = []
    payload: dict[str, Any] = {"meters": meters}
    if poll_interval_s is not None:
        payload["poll_interval_s"] = poll_interval_s
    staged = stage_config(conn, vault, scope.tenant_id, registry.gateway_id, payload)
    detail = {"ident": registry.ident, "version": staged.version, "meters": len(meters)}
    audit.append(
        conn, scope.tenant_id, actor, "gateway.config_pushed", "gateway", registry.gateway_id, detail
    )
    return PushedConfig(registry.gateway_id, registry.ident, staged.version, len(meters), skipped)
