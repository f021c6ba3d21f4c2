"""Which meters the head-end reads over DLMS, and how to reach each one.

A meter is read by the HES when its ``protocol`` is ``dlms``, it is active, and its communication device
(the modem, or the terminal server in front of it) has an address:

``tcp://host:port``
    the IEC 62056-47 wrapper over TCP, the usual IP meter;
``hdlc+tcp://host:port``
    HDLC frames over TCP, as terminal servers and concentrators carry them;
``fep://<ident>``
    the wrapper over the connection the device identified as ``ident`` opened to the head-end's
    front-end processor (:mod:`openami.hes.fep`): cellular modems and meters the head-end cannot dial;
``fep+hdlc://<ident>``
    HDLC frames over such a connection (a modem in transparent mode in front of an HDLC meter);
``hdlc+serial:///dev/ttyUSB0?baud=9600``
    HDLC frames on a serial line of the reader's own (an RS-485 bus or optical probe on a gateway), raw
    8N1 at ``baud`` (default 9600, the usual rate of HDLC meters; any rate the platform's termios has).

The ident is taken as written (case kept, ``%xx`` decoded), up to 64 characters.

Optional query parameters set the association: ``client`` (client SAP, default 1, the management
client), ``server`` (logical device, default 1), ``physical`` (HDLC physical address, default 16 + 0),
``auth`` (``hls`` default, ``lls`` or ``none``). The secrets come from the key vault, never from the
address. Targets are plain data so a collection round can be planned once and run concurrently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import Engine

from openami.drivers.dlms.transport import serial_speed
from openami.hes.targets import meter_rows
from openami.security.keyvault import KeyVault, MeterSecrets

__all__ = [
    "DLMS_PROTOCOL",
    "AddressError",
    "DlmsEndpoint",
    "DlmsTarget",
    "Via",
    "load_targets",
    "parse_address",
]

DLMS_PROTOCOL: Final = "dlms"
Framing = Literal["wrapper", "hdlc"]
Auth = Literal["hls", "lls", "none"]
Via = Literal["tcp", "fep", "serial"]
_SCHEMES: Final[dict[str, tuple[Framing, Via]]] = {
    "tcp": ("wrapper", "tcp"),
    "hdlc+tcp": ("hdlc", "tcp"),
    "fep": ("wrapper", "fep"),
    "fep+hdlc": ("hdlc", "fep"),
    "hdlc+serial": ("hdlc", "serial"),
}
DEFAULT_BAUDRATE: Final = 9600
_MAX_IDENT: Final = 64
_AUTHS: Final[frozenset[str]] = frozenset({"hls", "lls", "none"})


class AddressError(ValueError):
    """A communication device address the DLMS driver cannot use, with the reason."""


@dataclass(frozen=True, slots=True)
class DlmsEndpoint:
    """Where and how to open a session: parsed from a communication device's address.

    ``via`` ``"fep"``: over a connection held by the front-end processor; ``host`` is then the device's
    ident and ``port`` 0. ``via`` ``"serial"``: ``host`` is the tty's path, ``port`` 0, and the line runs
    at ``baudrate`` (unused otherwise).
    """

    framing: Framing
    host: str
    port: int
    client_sap: int = 1
    server_sap: int = 1
    physical_address: int = 16
    auth: Auth = "hls"
    via: Via = "tcp"
    baudrate: int = DEFAULT_BAUDRATE


@dataclass(frozen=True, slots=True)
class DlmsTarget:
    """One meter to read: who it belongs to, where it is, and its secrets (None: none stored)."""

    tenant_id: int
    tenant: str
    meter_id: int
    serial: str
    endpoint: DlmsEndpoint
    secrets: MeterSecrets | None


def _int_param(params: dict[str, list[str]], name: str, default: int, limit: int) -> int:
    values = params.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise AddressError(f"{name}={values[-1]!r} is not a number") from None
    if not 0 <= value <= limit:
        raise AddressError(f"{name}={value} is outside 0..{limit}")
    return value


def parse_address(address: str) -> DlmsEndpoint:
    """The endpoint named by ``address`` (see the module docstring); :class:`AddressError` otherwise."""
    parts = urlsplit(address.strip())
    scheme = _SCHEMES.get(parts.scheme)
    if scheme is None:
        raise AddressError(f"{address!r}: scheme must be one of {', '.join(_SCHEMES)}")
    framing, via = scheme
    params = parse_qs(parts.query)
    baudrate = DEFAULT_BAUDRATE
    if via == "fep":
        host, port = _fep_ident(address, parts.netloc, parts.path), 0
    elif via == "serial":
        host, port, baudrate = _serial_path(address, parts.netloc, parts.path), 0, _baud(params)
    else:
        try:
            found_host, found_port = parts.hostname, parts.port
        except ValueError as exc:
            raise AddressError(f"{address!r}: {exc}") from None
        if not found_host or found_port is None:
            raise AddressError(f"{address!r}: host and port are required")
        host, port = found_host, found_port
    auth = (params.get("auth") or ["hls"])[-1]
    if auth not in _AUTHS:
        raise AddressError(f"auth={auth!r} must be one of {', '.join(sorted(_AUTHS))}")
    return DlmsEndpoint(
        framing=framing,
        host=host,
        port=port,
        client_sap=_int_param(params, "client", 1, 0x7F),
        server_sap=_int_param(params, "server", 1, 0x3FFF),
        physical_address=_int_param(params, "physical", 16, 0x3FFF),
        auth=auth,  # type: ignore[arg-type]  # checked against _AUTHS above
        via=via,
        baudrate=baudrate,
    )


def _serial_path(address: str, netloc: str, path: str) -> str:
    """The tty path of an ``hdlc+serial:///dev/ttyX`` address (three slashes: no host)."""
    if netloc or not path.startswith("/") or path == "/":
        raise AddressError(f"{address!r}: expected hdlc+serial:///dev/ttyX?baud=9600 (an absolute tty path)")
    return unquote(path)


def _baud(params: dict[str, list[str]]) -> int:
    """The ``baud`` option: a rate the platform's termios can set (checked here, not at dial time)."""
    values = params.get("baud")
    if not values:
        return DEFAULT_BAUDRATE
    try:
        baudrate = int(values[-1])
        serial_speed(baudrate)
    except ValueError:
        raise AddressError(f"baud={values[-1]!r} is not a serial baud rate this platform supports") from None
    return baudrate


def _fep_ident(address: str, netloc: str, path: str) -> str:
    """The device ident of a ``fep://`` address, as written (``urlsplit`` lowercases a hostname)."""
    if path not in ("", "/"):
        raise AddressError(f"{address!r}: a fep address names a device ident only, no path")
    ident = unquote(netloc)
    if not ident:
        raise AddressError(f"{address!r}: the device ident is missing")
    if len(ident) > _MAX_IDENT or not ident.isprintable() or any(c.isspace() for c in ident):
        raise AddressError(f"{address!r}: the ident must be 1..{_MAX_IDENT} printable characters, no spaces")
    return ident


def load_targets(
    engine: Engine,
    vault: KeyVault,
    *,
    tenant_id: int | None = None,
    meter_ids: list[int] | None = None,
) -> tuple[list[DlmsTarget], list[tuple[str, str]]]:
    """The DLMS meters to read (optionally of one tenant, or only ``meter_ids``), and (serial, reason) for
    those that cannot be.

    Blocking (database and key vault): run it in a thread.
    """
    rows = meter_rows(engine, DLMS_PROTOCOL, tenant_id=tenant_id, meter_ids=meter_ids)
    by_tenant: dict[int, list[int]] = {}
    for row in rows:
        by_tenant.setdefault(row.tenant_id, []).append(row.meter_id)
    secrets = {
        (tid, meter_id): found
        for tid, ids in by_tenant.items()
        for meter_id, found in vault.meter_secrets(tid, ids).items()
    }
    targets: list[DlmsTarget] = []
    skipped: list[tuple[str, str]] = []
    for row in rows:
        try:
            endpoint = parse_address(row.address)
        except AddressError as exc:
            skipped.append((row.serial, str(exc)))
            continue
        found = secrets.get((row.tenant_id, row.meter_id))
        if endpoint.auth != "none" and found is None:
            skipped.append((row.serial, "no keys in the key vault"))
            continue
        targets.append(DlmsTarget(row.tenant_id, row.tenant, row.meter_id, row.serial, endpoint, found))
    return targets, skipped
