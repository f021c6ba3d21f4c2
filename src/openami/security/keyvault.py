"""The key vault: per-meter DLMS secrets, encrypted at rest under one master key.

A meter's block cipher key (EK), authentication key (AK), LLS password and HLS secret let anyone read
and command that meter, so a copy of the database must not hand them out. Each secret is sealed with
AES-256-GCM under the installation's master key before it reaches ``device_key``; the row keeps
``nonce || ciphertext || tag`` only. The additional authenticated data binds the sealed value to its row
(tenant, system title, kind): a ciphertext copied onto another meter's or tenant's row fails to open
instead of silently handing one meter's key to another.

Rows are found by the meter's *system title* (8 bytes, stored as 16 hex digits), because that is what a
ciphered push carries: the push listener learns the tenant, the meter and its keys from it. Wireless
M-Bus meters are stored under their 8-byte link address the same way (ADR 0009): the column holds
whatever 8-byte identity the device's frames carry. A system title
therefore belongs to one tenant only. The master key comes from the ``master_key`` setting or, when that
is empty, from ``data_dir/master.key`` (generated on first use, mode 0600): see :func:`load_master_key`.

OpenAMI gateways' 32-byte link keys (``docs/drivers/gateway-link.md``) are sealed the same way into
``gateway_link.key_ciphertext``, bound to (tenant id, gateway ``comm_device`` id, purpose ``link``): the
row id rather than the gateway's ident, so renaming a gateway does not orphan its key, while a
ciphertext copied onto another gateway's row still fails to open. Storing a new key for a gateway
rotates it: ``key_version`` goes up and the uplink replay window starts afresh (envelopes sealed under
the old key no longer verify, so none of them can be replayed; a replaced gateway may start its
numbering again). The downlink counter is kept: the gateway's window must never see a number twice.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Literal, get_args

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from openami.config import Settings
from openami.protocols.edge import KEY_LENGTH
from openami.protocols.edge.envelope import WINDOW
from openami.security.errors import SecurityError
from openami.store.schema import comm_device, device_key, gateway_link, meter, tenant

__all__ = [
    "GATEWAY_KEY_LENGTH",
    "GATEWAY_KINDS",
    "GATEWAY_WINDOW_BYTES",
    "MASTER_KEY_FILE",
    "MASTER_KEY_LENGTH",
    "KeyKind",
    "KeyVault",
    "KeyVaultError",
    "MeterSecrets",
    "PushKeys",
    "load_master_key",
]

log = logging.getLogger(__name__)

KeyKind = Literal["ek", "ak", "lls", "hls", "kek"]
"""``kek``: the meter's master key, which new keys are wrapped in when they are rotated."""
KINDS: Final = frozenset(get_args(KeyKind))
MASTER_KEY_LENGTH: Final = 32
MASTER_KEY_FILE: Final = "master.key"
SYSTEM_TITLE_LENGTH: Final = 8
_NONCE_LENGTH: Final = 12
_TAG_LENGTH: Final = 16
#: Longest secret accepted: DLMS keys are 16 or 32 bytes, LLS passwords a few dozen characters.
MAX_SECRET_LENGTH: Final = 256
#: OpenAMI gateway link keys: AES-256.
GATEWAY_KEY_LENGTH: Final = KEY_LENGTH
#: Bytes of the persisted uplink replay-window mask (``gateway_link.up_mask``).
GATEWAY_WINDOW_BYTES: Final = WINDOW // 8
#: comm_device kinds that speak the gateway link (modems do not).
GATEWAY_KINDS: Final = ("gateway", "concentrator")


class KeyVaultError(SecurityError):
    """A key cannot be stored or opened: bad input, wrong master key, or a row that was tampered with."""


@dataclass(frozen=True, slots=True)
class PushKeys:
    """What a push listener needs to accept a ciphered push from one system title."""

    tenant: str
    """The tenant's slug (bus subjects are named by it)."""
    meter_serial: str | None
    """The serial of the meter the keys are linked to, for pushes that do not name their meter."""
    encryption_key: bytes | None
    authentication_key: bytes | None


@dataclass(frozen=True, slots=True)
class MeterSecrets:
    """What the head-end needs to open a session with one meter: its system title and stored secrets."""

    system_title: bytes
    encryption_key: bytes | None
    authentication_key: bytes | None
    password: bytes | None


def _check_master(master_key: bytes) -> bytes:
    if len(master_key) != MASTER_KEY_LENGTH:
        raise KeyVaultError(f"master key must be {MASTER_KEY_LENGTH} bytes, got {len(master_key)}")
    return bytes(master_key)


def _title_hex(system_title: bytes) -> str:
    if len(system_title) != SYSTEM_TITLE_LENGTH:
        raise KeyVaultError(f"system title must be {SYSTEM_TITLE_LENGTH} bytes, got {len(system_title)}")
    return bytes(system_title).hex().upper()


def _aad(tenant_id: int, title_hex: str, kind: str) -> bytes:
    return f"openami/device_key/v1|{tenant_id}|{title_hex}|{kind}".encode()


def _gateway_aad(tenant_id: int, comm_device_id: int, purpose: str = "link") -> bytes:
    return f"openami/gateway_link/v1|{tenant_id}|{comm_device_id}|{purpose}".encode()


def _seal(master: bytes, aad: bytes, secret: bytes) -> bytes:
    nonce = secrets.token_bytes(_NONCE_LENGTH)  # random nonces: 2^32 seals per master key stay safe
    return nonce + AESGCM(master).encrypt(nonce, secret, aad)


def _open(master: bytes, aad: bytes, sealed: bytes) -> bytes:
    if len(sealed) < _NONCE_LENGTH + _TAG_LENGTH:
        raise KeyVaultError("stored key is truncated")
    try:
        return AESGCM(master).decrypt(sealed[:_NONCE_LENGTH], sealed[_NONCE_LENGTH:], aad)
    except InvalidTag:
        # Deliberately vague: the caller cannot tell a wrong master key from a moved or altered row.
        raise KeyVaultError("stored key does not open: wrong master key or altered row") from None


class KeyVault:
    """Stores and opens device secrets; every call is one short transaction (call it off the event loop)."""

    def __init__(self, engine: Engine, master_key: bytes) -> None:
        self._engine = engine
        self._master = _check_master(master_key)

    def store(
        self,
        tenant_id: int,
        *,
        system_title: bytes,
        meter_id: int | None,
        kind: KeyKind,
        secret: bytes,
    ) -> None:
        """Store ``secret`` as the ``kind`` key of ``system_title``, replacing (not keeping) an older one.

        Replacing bumps ``key_version`` so operators can tell a rotated key from the original. A system
        title already holding keys for another tenant, or a meter of another tenant, is refused: otherwise
        one tenant could capture another's pushes by registering the same title.
        """
        if kind not in KINDS:
            raise KeyVaultError(f"unknown key kind {kind!r} (one of {', '.join(sorted(KINDS))})")
        if not 0 < len(secret) <= MAX_SECRET_LENGTH:
            raise KeyVaultError(f"secret must be 1 to {MAX_SECRET_LENGTH} bytes, got {len(secret)}")
        title = _title_hex(system_title)
        sealed = _seal(self._master, _aad(tenant_id, title, kind), bytes(secret))
        try:
            with self._engine.begin() as conn:
                self._check_owner(conn, tenant_id, title, meter_id)
                version = conn.execute(
                    select(device_key.c.key_version)
                    .where(device_key.c.system_title == title, device_key.c.kind == kind)
                    .with_for_update()
                ).scalar_one_or_none()
                values = {"meter_id": meter_id, "ciphertext": sealed}
                if version is None:
                    conn.execute(
                        device_key.insert().values(
                            tenant_id=tenant_id, system_title=title, kind=kind, **values
                        )
                    )
                else:
                    conn.execute(
                        device_key.update()
                        .where(device_key.c.system_title == title, device_key.c.kind == kind)
                        .values(key_version=version + 1, created_at=datetime.now(UTC), **values)
                    )
        except IntegrityError as exc:
            # A concurrent store of the same key, or a tenant id that does not exist.
            raise KeyVaultError(f"cannot store the {kind} key of {title}: {exc.orig}") from None

    @staticmethod
    def _check_owner(conn: Connection, tenant_id: int, title: str, meter_id: int | None) -> None:
        owners = set(
            conn.execute(select(device_key.c.tenant_id).where(device_key.c.system_title == title)).scalars()
        )
        if owners - {tenant_id}:
            raise KeyVaultError(f"system title {title} is registered to another tenant")
        if meter_id is not None:
            owner = conn.execute(select(meter.c.tenant_id).where(meter.c.id == meter_id)).scalar_one_or_none()
            if owner != tenant_id:
                raise KeyVaultError(f"meter {meter_id} is not a meter of tenant {tenant_id}")

    def get(self, tenant_id: int, system_title: bytes, kind: KeyKind) -> bytes | None:
        """The ``kind`` secret of ``system_title`` in ``tenant_id``, or None when none is stored."""
        title = _title_hex(system_title)
        with self._engine.connect() as conn:
            sealed = conn.execute(
                select(device_key.c.ciphertext).where(
                    device_key.c.tenant_id == tenant_id,
                    device_key.c.system_title == title,
                    device_key.c.kind == kind,
                )
            ).scalar_one_or_none()
        return None if sealed is None else _open(self._master, _aad(tenant_id, title, kind), sealed)

    def find_by_system_title(self, system_title: bytes) -> tuple[int, int | None] | None:
        """(tenant id, meter id or None) of the keys stored for ``system_title``, or None if unknown."""
        title = _title_hex(system_title)
        with self._engine.connect() as conn:
            row = conn.execute(
                select(device_key.c.tenant_id, device_key.c.meter_id)
                .where(device_key.c.system_title == title)
                .order_by(device_key.c.meter_id.is_(None), device_key.c.id)
                .limit(1)
            ).first()
        return None if row is None else (int(row.tenant_id), row.meter_id)

    def push_keys(self, system_title: bytes) -> PushKeys | None:
        """Tenant slug, meter serial and EK/AK of ``system_title`` in one read, for the push listener."""
        title = _title_hex(system_title)
        query = (
            select(
                device_key.c.tenant_id,
                device_key.c.kind,
                device_key.c.ciphertext,
                tenant.c.slug,
                meter.c.serial,
            )
            .join(tenant, tenant.c.id == device_key.c.tenant_id)
            .outerjoin(meter, meter.c.id == device_key.c.meter_id)
            .where(device_key.c.system_title == title, device_key.c.kind.in_(("ek", "ak")))
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return None
        keys = {
            row.kind: _open(self._master, _aad(row.tenant_id, title, row.kind), row.ciphertext)
            for row in rows
        }
        serial = next((row.serial for row in rows if row.serial is not None), None)
        return PushKeys(rows[0].slug, serial, keys.get("ek"), keys.get("ak"))

    def meter_secrets(self, tenant_id: int, meter_ids: list[int]) -> dict[int, MeterSecrets]:
        """The secrets of each of ``meter_ids`` that has any, in one read (a collection round's worth).

        A meter holding keys under two system titles (a replaced communication module) is given the
        title of its most recently stored key.
        """
        query = (
            select(
                device_key.c.meter_id,
                device_key.c.system_title,
                device_key.c.kind,
                device_key.c.ciphertext,
            )
            .where(device_key.c.tenant_id == tenant_id, device_key.c.meter_id.in_(meter_ids))
            .order_by(device_key.c.created_at, device_key.c.id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        titles: dict[int, str] = {}
        opened: dict[tuple[int, str], dict[str, bytes]] = {}
        for row in rows:
            titles[row.meter_id] = row.system_title
            opened.setdefault((row.meter_id, row.system_title), {})[row.kind] = _open(
                self._master, _aad(tenant_id, row.system_title, row.kind), row.ciphertext
            )
        secrets_by_meter = {}
        for meter_id, title in titles.items():
            keys = opened[meter_id, title]
            secrets_by_meter[int(meter_id)] = MeterSecrets(
                bytes.fromhex(title), keys.get("ek"), keys.get("ak"), keys.get("lls")
            )
        return secrets_by_meter

    @staticmethod
    def new_gateway_key() -> bytes:
        """A fresh random gateway link key (32 bytes from the OS's CSPRNG)."""
        return os.urandom(GATEWAY_KEY_LENGTH)

    def store_gateway_key(
        self, tenant_id: int, comm_device_id: int, key: bytes, *, conn: Connection | None = None
    ) -> int:
        """Store ``key`` as the link key of the gateway ``comm_device_id``; returns its ``key_version``.

        The first key is version 1; storing another rotates it (module docstring). The gateway must be a
        ``gateway`` or ``concentrator`` of ``tenant_id``. With ``conn`` the write joins the caller's
        transaction (so the API audits it atomically); otherwise it is a transaction of its own.
        """
        if len(key) != GATEWAY_KEY_LENGTH:
            raise KeyVaultError(f"gateway link keys are {GATEWAY_KEY_LENGTH} bytes, got {len(key)}")
        sealed = _seal(self._master, _gateway_aad(tenant_id, comm_device_id), bytes(key))
        if conn is not None:
            return self._store_gateway_key(conn, tenant_id, comm_device_id, sealed)
        try:
            with self._engine.begin() as own:
                return self._store_gateway_key(own, tenant_id, comm_device_id, sealed)
        except IntegrityError as exc:  # a concurrent first key for the same gateway
            raise KeyVaultError(f"cannot store the link key of {comm_device_id}: {exc.orig}") from None

    @staticmethod
    def _store_gateway_key(conn: Connection, tenant_id: int, comm_device_id: int, sealed: bytes) -> int:
        kind = conn.execute(
            select(comm_device.c.kind).where(
                comm_device.c.id == comm_device_id, comm_device.c.tenant_id == tenant_id
            )
        ).scalar_one_or_none()
        if kind is None:
            raise KeyVaultError(f"gateway {comm_device_id} is not a device of tenant {tenant_id}")
        if kind not in GATEWAY_KINDS:
            raise KeyVaultError(f"device {comm_device_id} is a {kind}, not a gateway or concentrator")
        now = datetime.now(UTC)
        fresh_window = {"up_highest": -1, "up_mask": bytes(GATEWAY_WINDOW_BYTES)}
        # A new link numbers its downlinks from its creation time in milliseconds, not from 1, so a link
        # created again (a head-end database rebuilt) stays above what the gateway has already seen.
        # Write first: on SQLite that takes the write lock before anything is read, on PostgreSQL it
        # locks the row; either way two rotations cannot both read the same old version.
        version = conn.execute(
            update(gateway_link)
            .where(gateway_link.c.comm_device_id == comm_device_id, gateway_link.c.tenant_id == tenant_id)
            .values(
                key_ciphertext=sealed,
                key_version=gateway_link.c.key_version + 1,
                key_created_at=now,
                **fresh_window,
            )
            .returning(gateway_link.c.key_version)
        ).scalar_one_or_none()
        if version is not None:
            return int(version)
        conn.execute(
            gateway_link.insert().values(
                tenant_id=tenant_id,
                comm_device_id=comm_device_id,
                key_ciphertext=sealed,
                key_version=1,
                key_created_at=now,
                next_down_seq=int(now.timestamp() * 1000),
                **fresh_window,
            )
        )
        return 1

    def gateway_key(self, tenant_id: int, comm_device_id: int) -> bytes | None:
        """The link key of gateway ``comm_device_id`` in ``tenant_id``, or None when it has none."""
        with self._engine.connect() as conn:
            sealed = conn.execute(
                select(gateway_link.c.key_ciphertext).where(
                    gateway_link.c.tenant_id == tenant_id, gateway_link.c.comm_device_id == comm_device_id
                )
            ).scalar_one_or_none()
        return None if sealed is None else self.open_gateway_key(tenant_id, comm_device_id, sealed)

    def open_gateway_key(self, tenant_id: int, comm_device_id: int, sealed: bytes) -> bytes:
        """Open a ``gateway_link.key_ciphertext`` read by the caller (the listener reads the key together
        with the link's state); :class:`KeyVaultError` if it is not that gateway's."""
        return _open(self._master, _gateway_aad(tenant_id, comm_device_id), bytes(sealed))

    def seal_gateway_config(self, tenant_id: int, comm_device_id: int, payload: bytes) -> bytes:
        """Seal a CONFIG payload for ``gateway_link.config_ciphertext`` (purpose ``config``): it may
        carry meter keys, so it is kept as the link key is, bound to its gateway's row."""
        return _seal(self._master, _gateway_aad(tenant_id, comm_device_id, "config"), bytes(payload))

    def open_gateway_config(self, tenant_id: int, comm_device_id: int, sealed: bytes) -> bytes:
        """Open what :meth:`seal_gateway_config` sealed; :class:`KeyVaultError` if it is not that
        gateway's."""
        return _open(self._master, _gateway_aad(tenant_id, comm_device_id, "config"), bytes(sealed))

    def rotate_master(self, new_master: bytes) -> None:
        """Re-seal every stored secret under ``new_master`` in one transaction, then use it.

        All or nothing: a row that does not open under the current master key aborts the rotation with
        nothing changed. The caller must persist ``new_master`` (setting or key file) before it forgets the
        old one; ``key_version`` is unchanged, since the device keys themselves are the same.
        """
        new = _check_master(new_master)
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    device_key.c.id,
                    device_key.c.tenant_id,
                    device_key.c.system_title,
                    device_key.c.kind,
                    device_key.c.ciphertext,
                ).with_for_update()
            ).all()
            for row in rows:
                aad = _aad(row.tenant_id, row.system_title, row.kind)
                resealed = _seal(new, aad, _open(self._master, aad, row.ciphertext))
                conn.execute(device_key.update().where(device_key.c.id == row.id).values(ciphertext=resealed))
            links = conn.execute(
                select(
                    gateway_link.c.id,
                    gateway_link.c.tenant_id,
                    gateway_link.c.comm_device_id,
                    gateway_link.c.key_ciphertext,
                    gateway_link.c.config_ciphertext,
                ).with_for_update()
            ).all()
            for link in links:
                aad = _gateway_aad(link.tenant_id, link.comm_device_id)
                values = {"key_ciphertext": _seal(new, aad, _open(self._master, aad, link.key_ciphertext))}
                if link.config_ciphertext is not None:  # the last CONFIG pushed (it may hold meter keys)
                    aad = _gateway_aad(link.tenant_id, link.comm_device_id, "config")
                    opened = _open(self._master, aad, link.config_ciphertext)
                    values["config_ciphertext"] = _seal(new, aad, opened)
                conn.execute(gateway_link.update().where(gateway_link.c.id == link.id).values(**values))
        self._master = new


def load_master_key(settings: Settings) -> bytes:
    """The master key from the ``master_key`` setting, else from ``data_dir/master.key``, else a new one.

    Generating one on first use keeps the laptop default working with nothing configured; the file is
    created with mode 0600 and exclusively, so two processes starting together agree on one key. Losing
    the file loses every stored meter key: back it up with the database (but not next to it).
    """
    configured = settings.master_key.get_secret_value().strip()
    if configured:
        return _parse_master_hex(configured, "the master_key setting")
    path = Path(settings.data_dir) / MASTER_KEY_FILE
    try:
        return _parse_master_hex(path.read_text(encoding="ascii").strip(), str(path))
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(MASTER_KEY_LENGTH)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it between our read and now: use theirs
        return _parse_master_hex(path.read_text(encoding="ascii").strip(), str(path))
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key.hex() + "\n")
    log.warning("generated a new master key in %s: back it up, meter keys cannot be read without it", path)
    return key


def _parse_master_hex(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeyVaultError(f"{where} is not hex") from None
    if len(key) != MASTER_KEY_LENGTH:
        raise KeyVaultError(f"{where} must be {MASTER_KEY_LENGTH * 2} hex digits, got {len(text)}")
    return key
