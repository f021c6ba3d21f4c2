"""The gateway agent's configuration: one TOML file, validated into :class:`GatewayConfig`.

The file names the gateway (id and tenant, as the head-end registered it), where its archive lives,
how often it polls and forwards, the uplink (broker URL, credentials, TLS files, the link key) and the
meters it reads, each with an address in the same URL forms the head-end's collectors use::

    id = "gw-0042"
    tenant = "acme"
    archive = "/var/lib/openami-gateway/archive.db"

    [uplink]
    url = "mqtts://broker.example.net:8883"
    username = "gw-0042"
    password_file = "/etc/openami-gateway/mqtt-password"
    ca_file = "/etc/openami-gateway/ca.pem"
    key_file = "/etc/openami-gateway/link.key"

    [[meters]]
    serial = "MB-12345678"
    protocol = "mbus"
    address = "mbus+tcp://10.0.0.5:10001?primary=1"

Relative paths are relative to the file's directory. Secrets (the MQTT password and the 32-byte link
key) are read at load time, from the file or from the inline value, so a missing or unreadable file is
a configuration error at start and not a failure hours later.

Everything wrong with a file is reported as one :class:`GatewayConfigError` naming the field
(``uplink.key``, ``meters[3].address``) and the reason; the CLI prints it as one line and exits 2.

The head-end can replace the meter list and the poll interval at run time (CONFIG envelopes, see
:class:`RemoteConfig`); those are validated with the same meter model, one meter at a time, so one bad
entry costs that meter and not the update.
"""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from openami.bus.messages import DEVICE_ID_PATTERN, TENANT_SLUG_PATTERN
from openami.drivers.modbus.models import MODELS
from openami.protocols.edge import KEY_LENGTH, Compression

__all__ = [
    "PROTOCOLS",
    "DiscoveryConfig",
    "GatewayConfig",
    "GatewayConfigError",
    "MeterConfig",
    "MeterKeys",
    "ModemConfig",
    "PulseSettings",
    "ReceiverConfig",
    "RemoteConfig",
    "UplinkConfig",
    "load_config",
    "parse_config",
]

Protocol = Literal["mbus", "modbus", "iec62056-21", "dsmr", "sml", "dlms", "wmbus", "pulse"]
PROTOCOLS: Final[tuple[str, ...]] = ("mbus", "modbus", "iec62056-21", "dsmr", "sml", "dlms", "wmbus", "pulse")
METER_KEY_LENGTHS: Final = (16, 32)
"""AES-128 (DLMS suites 0 and 1, wM-Bus, DSMR P1) or AES-256 (DLMS suite 2) keys, in bytes."""
COMPRESSIONS: Final = {"none": Compression.NONE, "zlib": Compression.ZLIB, "zstd": Compression.ZSTD}
_FIELD_PATH: Final = re.compile(r"[a-z_][a-z0-9_]*(\[\d+\])?(\.[a-z_][a-z0-9_]*(\[\d+\])?)*")


class GatewayConfigError(ValueError):
    """A configuration that cannot be used: the file, the field (``meters[3].address``) and why."""

    def __init__(self, field: str, reason: str, *, source: str | None = None) -> None:
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field}: {reason}" if field else f"{where}{reason}")
        self.field = field
        self.reason = reason
        self.source = source


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _base(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get("base")
    return Path(base) if base is not None else Path.cwd()


def _read_secret(path: Path, field: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{field}: cannot read {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{field}: {str(path)!r} is not text") from None


def _link_key(text: str, field: str) -> bytes:
    cleaned = "".join(text.split())
    problem = f"{field}: must be {2 * KEY_LENGTH} hex digits (a {KEY_LENGTH}-byte AES-256 key)"
    if len(cleaned) != 2 * KEY_LENGTH:
        raise ValueError(problem)
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise ValueError(problem) from None


class PulseSettings(_Strict):
    """What a pulse input counts (see :class:`openami.drivers.pulse.PulseInput`)."""

    channel: str = Field(min_length=1, max_length=64)
    unit: str = Field("", max_length=16)
    weight: float = Field(gt=0, description="What one pulse is worth, in the unit (e.g. 0.01 m3).")
    initial_value: float = 0.0
    initial_count: int = Field(0, ge=0)
    counter_bits: int = Field(32, ge=8, le=64)


def _pulse_path(address: str) -> Path:
    parts = urlsplit(address.strip())
    if parts.scheme != "pulse+file" or parts.netloc or not parts.path.startswith("/"):
        raise ValueError(f"{address!r}: expected pulse+file:///path/to/count (a file holding the count)")
    if parts.query:
        raise ValueError(f"{address!r}: pulse addresses take no options (see the meter's pulse table)")
    return Path(parts.path)


def _meter_key(text: str, field: str) -> bytes:
    cleaned = "".join(text.split())
    try:
        key = bytes.fromhex(cleaned)
    except ValueError:
        key = b""
    if len(key) not in METER_KEY_LENGTHS:
        raise ValueError(f"{field}: must be 32 or 64 hex digits (an AES-128 or AES-256 key)")
    return key


class MeterKeys(_Strict):
    """A meter's own secrets, for the protocols that encrypt at the meter: DLMS/COSEM (``encryption``
    and ``authentication`` keys, or the LLS ``password``), wM-Bus (``encryption``, the AES-128 key) and
    encrypted P1 ports (``encryption`` and, where the meter authenticates, ``authentication``); and the
    ``password`` of IEC 62056-21 meters' programming mode, with which the gateway sets their clocks.

    Each key is given inline (hex) or as a file holding the hex, never both; files are read at load, so
    an unreadable one is an error at start. The head-end's CONFIG carries them inline: the envelope is
    encrypted end to end under the gateway's link key, so the broker never sees them."""

    encryption: SecretStr | None = None
    encryption_file: Path | None = None
    authentication: SecretStr | None = None
    authentication_file: Path | None = None
    password: SecretStr | None = Field(
        None, description="DLMS low-level security (LLS) password; IEC 62056-21: the P1 programming password."
    )

    _encryption: bytes | None = PrivateAttr(None)
    _authentication: bytes | None = PrivateAttr(None)

    @field_validator("encryption_file", "authentication_file")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        return value if value.is_absolute() else _base(info) / value

    @model_validator(mode="after")
    def _read_keys(self) -> MeterKeys:
        for name in ("encryption", "authentication"):
            inline: SecretStr | None = getattr(self, name)
            path: Path | None = getattr(self, f"{name}_file")
            if inline is not None and path is not None:
                raise ValueError(f"{name}: give {name} or {name}_file, not both")
            if inline is not None:
                setattr(self, f"_{name}", _meter_key(inline.get_secret_value(), name))
            elif path is not None:
                setattr(self, f"_{name}", _meter_key(_read_secret(path, f"{name}_file"), f"{name}_file"))
        return self

    @property
    def encryption_key(self) -> bytes | None:
        return self._encryption

    @property
    def authentication_key(self) -> bytes | None:
        return self._authentication

    @property
    def lls_password(self) -> bytes | None:
        return None if self.password is None else self.password.get_secret_value().encode()


class MeterConfig(_Strict):
    """One meter the gateway reads. Field order matters: ``address`` is checked last, against the
    protocol, the model and the pulse settings."""

    serial: str = Field(min_length=1, max_length=64)
    protocol: Protocol
    model: str = Field("", max_length=64, description="Modbus: the register map (e.g. eastron-sdm630).")
    pulse: PulseSettings | None = Field(None, validate_default=True)
    keys: MeterKeys | None = None
    address: str = Field(min_length=1, max_length=512)

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("protocol") == "modbus" and value not in MODELS:
            known = ", ".join(sorted(MODELS))
            raise ValueError(f"no Modbus register map {value!r} (known: {known})")
        return value

    @field_validator("pulse")
    @classmethod
    def _pulse_settings(cls, value: PulseSettings | None, info: ValidationInfo) -> PulseSettings | None:
        protocol = info.data.get("protocol")
        if protocol == "pulse" and value is None:
            raise ValueError("a pulse meter needs its pulse table (channel, unit, weight)")
        if protocol not in (None, "pulse") and value is not None:
            raise ValueError(f"only pulse meters have pulse settings, not {protocol}")
        return value

    @field_validator("address")
    @classmethod
    def _usable_address(cls, value: str, info: ValidationInfo) -> str:
        protocol = info.data.get("protocol")
        if protocol is None or "model" not in info.data:
            return value  # reported on its own field
        if protocol == "pulse":
            _pulse_path(value)
            return value
        from openami.edge.meters import check_address  # the collectors' own parsers

        check_address(protocol, value, info.data["model"])
        return value

    @property
    def pulse_path(self) -> Path:
        return _pulse_path(self.address)

    @model_validator(mode="after")
    def _wmbus_key(self) -> MeterConfig:
        key = self.keys.encryption_key if self.keys is not None else None
        if self.protocol == "wmbus" and key is not None and len(key) != 16:
            raise ValueError("keys.encryption: a wM-Bus key is AES-128: 32 hex digits")
        return self


class UplinkConfig(_Strict):
    """How the gateway reaches the head-end: the broker, who it is there, and the link key."""

    url: str = Field(description="mqtt://host:port or mqtts://host:port (TLS).")
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    ca_file: Path | None = Field(None, description="CA bundle for mqtts:// (default: the system's).")
    client_cert_file: Path | None = None
    client_key_file: Path | None = None
    topic_prefix: str = Field("openami", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    key: SecretStr | None = Field(None, description="The link key: 64 hex digits.")
    key_file: Path | None = None
    mqtt_version: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = Field(30, ge=5, le=3600)
    window: int = Field(8, ge=1, le=256, description="Batches sent and not yet acknowledged, at most.")
    ack_timeout_s: float = Field(60.0, gt=0, le=3600)
    reconnect_min_s: float = Field(1.0, gt=0, le=600)
    reconnect_max_s: float = Field(60.0, gt=0, le=3600)
    session_expiry_s: int = Field(86400, ge=0, le=2**32 - 1)
    client_id: str | None = Field(None, max_length=128)

    _key: bytes = PrivateAttr(b"")
    _password: str | None = PrivateAttr(None)

    @field_validator("url")
    @classmethod
    def _mqtt_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, not {value!r}")
        try:
            parts.port  # noqa: B018  # raises on a port that is no number
        except ValueError:
            raise ValueError(f"bad port in {value!r}") from None
        if parts.username or parts.password:
            raise ValueError("give the credentials as username and password_file, not in the URL")
        return value

    @field_validator("ca_file", "client_cert_file", "client_key_file", "password_file", "key_file")
    @classmethod
    def _relative_to_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = value if value.is_absolute() else _base(info) / value
        if not path.is_file():
            raise ValueError(f"no such file {str(path)!r}")
        return path

    @model_validator(mode="after")
    def _secrets(self) -> UplinkConfig:
        if (self.key is None) == (self.key_file is None):
            raise ValueError("key: give exactly one of key (64 hex digits) or key_file")
        if self.key is not None:
            self._key = _link_key(self.key.get_secret_value(), "key")
        else:
            assert self.key_file is not None
            self._key = _link_key(_read_secret(self.key_file, "key_file"), "key_file")
        if self.password is not None and self.password_file is not None:
            raise ValueError("password: give password or password_file, not both")
        if self.password_file is not None:
            self._password = _read_secret(self.password_file, "password_file")
        elif self.password is not None:
            self._password = self.password.get_secret_value()
        if (self._password is not None) and self.username is None:
            raise ValueError("password: a password needs a username")
        if (self.client_cert_file is None) != (self.client_key_file is None):
            raise ValueError("client_cert_file: a client certificate needs its client_key_file (and back)")
        if not self.tls and (self.ca_file or self.client_cert_file):
            raise ValueError("ca_file: TLS files need an mqtts:// url")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s: must not be below reconnect_min_s")
        return self

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def link_key(self) -> bytes:
        """The gateway's 32-byte link key (read at load)."""
        return self._key

    @property
    def mqtt_password(self) -> str | None:
        return self._password

    @property
    def display(self) -> str:
        """The broker, safe for logs."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def _receiver_url(value: str) -> str:
    from openami.drivers.wmbus.receiver import parse_receiver_url

    parse_receiver_url(value)  # WmbusReceiverUrlError is a ValueError naming the problem
    return value


def _timezone(value: str) -> str:
    from openami.tz import check_timezone

    return check_timezone(value)


def _modem_port(value: str) -> str:
    from openami.edge.modem import check_port

    return check_port(value)


class ModemConfig(_Strict):
    """The gateway's cellular modem, asked for its signal (``openami.edge.modem``)."""

    port: Annotated[str, AfterValidator(_modem_port)] = Field(
        max_length=512, description="The AT port: a tty (/dev/ttyUSB2) or tcp://host:port."
    )
    baudrate: int = Field(115200, ge=300, le=4_000_000)
    interval_s: float = Field(300.0, ge=1, le=86400)
    timeout_s: float = Field(5.0, gt=0, le=60)


def _mbus_bus(value: str) -> str:
    from openami.hes.mbus_collector import parse_bus

    if len(value) > 200:
        raise ValueError("a bus URL is 200 characters at most (devices found on it are reported with it)")
    query = parse_qs(urlsplit(value).query)
    if "primary" in query or "secondary" in query:
        raise ValueError(f"{value!r}: a bus to search names no meter (no primary= or secondary=)")
    parse_bus(value)
    return value


class ReceiverConfig(_Strict):
    """A wireless M-Bus receiver the gateway listens to (``openami.edge.wmbus``)."""

    url: Annotated[str, AfterValidator(_receiver_url)] = Field(
        max_length=512, description="wmbus+tcp://host:port or wmbus+serial:///dev/ttyX?baud=N."
    )
    idle_timeout_s: float | None = Field(
        None, gt=0, le=86400, description="Reconnect after this much silence (receivers that always hear)."
    )


class DiscoveryConfig(_Strict):
    """Finding meters that are not in the meter list (``openami.edge.discovery``)."""

    wmbus: Literal["all", "installation", "off"] = Field(
        "all", description="Unlisted radio meters reported: any heard, only SND-IR senders, or none."
    )
    mbus_buses: list[Annotated[str, AfterValidator(_mbus_bus)]] = Field(
        default_factory=list, max_length=64, description="M-Bus buses to search by secondary address."
    )
    mbus_search_interval_s: float = Field(86400.0, ge=1, le=30 * 86400)
    mbus_search_timeout_s: float = Field(
        0.5, gt=0, le=10, description="Wait for an answer to each search step (most patterns get none)."
    )
    report_interval_s: float = Field(86400.0, ge=1, le=30 * 86400, description="Re-sent this often.")
    max_devices: int = Field(10_000, ge=1, le=100_000, description="Discovered devices kept at most.")

    @field_validator("mbus_buses")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a bus is listed twice")
        return value


class GatewayConfig(_Strict):
    """The whole gateway (module docstring)."""

    id: str = Field(pattern=DEVICE_ID_PATTERN)
    tenant: str = Field(pattern=TENANT_SLUG_PATTERN)
    archive: Path
    retention_days: int = Field(45, ge=1, le=3660)
    poll_interval_s: int = Field(900, ge=1, le=86400)
    forward_interval_s: float = Field(60.0, ge=0.1, le=86400)
    health_interval_s: float = Field(300.0, ge=0.1, le=86400)
    time_sync_interval_s: float = Field(3600.0, ge=0.1, le=86400)
    clock_max_round_trip_s: float = Field(
        2.0, gt=0, le=60, description="A TIME answer with a longer round trip does not synchronise."
    )
    clock_sync_interval_s: float = Field(
        86400.0, ge=1, le=30 * 86400, description="How often the M-Bus meters' clocks are checked."
    )
    clock_threshold_s: float = Field(30.0, ge=1, le=86400, description="A meter clock further off is set.")
    clock_timezone: Annotated[str, AfterValidator(_timezone)] = Field(
        "UTC", description="The zone the meters' clocks show (M-Bus clocks are local time)."
    )
    modem: ModemConfig | None = None
    batch_readings: int = Field(10_000, ge=1, le=500_000, description="Readings per batch at most.")
    compression: Literal["zstd", "zlib", "none"] = "zstd"
    read_timeout_s: float = Field(3.0, gt=0, le=120)
    concurrency: int = Field(32, ge=1, le=1024, description="Modbus and P1 reads in flight at once.")
    comm_alarm_after: int = Field(3, ge=0, le=1000, description="Failed polls in a row before comm_lost.")
    uplink: UplinkConfig
    meters: list[MeterConfig] = Field(default_factory=list)
    receivers: list[ReceiverConfig] = Field(default_factory=list, max_length=16)
    discovery: DiscoveryConfig = Field(default_factory=lambda: DiscoveryConfig())

    @field_validator("archive")
    @classmethod
    def _archive_path(cls, value: Path, info: ValidationInfo) -> Path:
        return value if value.is_absolute() else _base(info) / value

    @field_validator("compression")
    @classmethod
    def _compression_available(cls, value: str) -> str:
        if value == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise ValueError("zstd needs the zstandard package (pip install zstandard)") from None
        return value

    @model_validator(mode="after")
    def _meters_agree(self) -> GatewayConfig:
        problem = meter_list_problem(self.meters)
        if problem is not None:
            raise ValueError(problem)
        urls = [receiver.url for receiver in self.receivers]
        for index, url in enumerate(urls):
            if url in urls[:index]:
                raise ValueError(f"receivers[{index}].url: {url!r} is listed twice")
        return self

    @property
    def compression_code(self) -> Compression:
        return COMPRESSIONS[self.compression]

    @property
    def remote_config_path(self) -> Path:
        """Where the head-end's last CONFIG is kept, next to the archive."""
        return self.archive.with_name(self.archive.name + ".config.json")


def meter_list_problem(meters: list[MeterConfig]) -> str | None:
    """What is wrong across meters (``meters[i].field: reason``), or None: a serial used twice, or an
    IEC 62056-21 meter without a device address on a converter shared with others."""
    seen: dict[str, int] = {}
    for index, meter in enumerate(meters):
        if meter.serial in seen:
            return f"meters[{index}].serial: {meter.serial!r} is already meters[{seen[meter.serial]}]"
        seen[meter.serial] = index
    from openami.edge.wmbus import add_radio_meter  # the radio meters' own address rules

    radio: list[Any] = []
    for index, meter in enumerate(meters):
        if meter.protocol == "wmbus":
            try:
                add_radio_meter(radio, meter)
            except ValueError as exc:
                return f"meters[{index}].address: {exc}"
    sharing: dict[str, list[int]] = defaultdict(list)
    for index, meter in enumerate(meters):
        if meter.protocol == "iec62056-21":
            sharing[urlsplit(meter.address).netloc].append(index)
    for members in sharing.values():
        if len(members) < 2:
            continue
        for index in members:
            if not parse_qs(urlsplit(meters[index].address).query).get("address"):
                return (
                    f"meters[{index}].address: {len(members)} meters share this converter,"
                    " so each needs ?address= (its device address)"
                )
    return None


class RemoteMeter(MeterConfig):
    """A meter pushed by the head-end: unknown fields are ignored (newer head-ends may send more)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class RemoteConfig(BaseModel):
    """A CONFIG envelope's payload: ``version`` (higher replaces lower), optionally ``poll_interval_s``,
    and the meter list as raw entries (checked one by one with :func:`remote_meters`)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = Field(ge=1)
    poll_interval_s: int | None = Field(None, ge=1, le=86400)
    meters: list[dict[str, Any]] = Field(default_factory=list, max_length=100_000)


def remote_meters(entries: list[dict[str, Any]]) -> tuple[list[MeterConfig], list[tuple[str, str]]]:
    """The usable meters of a CONFIG, and (serial or ``meters[i]``, reason) for each refused one."""
    usable: list[MeterConfig] = []
    refused: list[tuple[str, str]] = []
    serials: set[str] = set()
    for index, entry in enumerate(entries):
        name = str(entry.get("serial") or f"meters[{index}]") if isinstance(entry, dict) else f"[{index}]"
        try:
            meter = RemoteMeter.model_validate(entry)
        except ValidationError as exc:
            refused.append((name, _first_error(exc)[1]))
            continue
        if meter.serial in serials:
            refused.append((name, "serial listed twice"))
            continue
        serials.add(meter.serial)
        usable.append(MeterConfig.model_validate(meter.model_dump()))
    problem = meter_list_problem(usable)
    while problem is not None:  # a shared IEC converter without addresses: drop that meter
        index = int(problem.split("]", 1)[0].removeprefix("meters["))
        refused.append((usable[index].serial, problem.split(": ", 1)[1]))
        del usable[index]
        problem = meter_list_problem(usable)
    return usable, refused


def _field(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _first_error(exc: ValidationError) -> tuple[str, str]:
    """(field, reason) of the first error; a model-level ``ValueError('field: reason')`` names its own."""
    first = exc.errors(include_url=False)[0]
    field = _field(tuple(first["loc"]))
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "value_error" and ": " in message:
        head, rest = message.split(": ", 1)
        if _FIELD_PATH.fullmatch(head):  # "key: give exactly one ..." names a field below this model
            field = f"{field}.{head}" if field else head
            message = rest
    if first["type"] == "missing":
        message = "required"
    elif first["type"] == "extra_forbidden":
        message = "unknown setting"
    return field, message


def parse_config(text: str, *, base: Path | None = None, source: str | None = None) -> GatewayConfig:
    """Validate TOML text; relative paths are relative to ``base``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError("", f"not valid TOML: {exc}", source=source) from None
    try:
        return GatewayConfig.model_validate(data, context={"base": base or Path.cwd()})
    except ValidationError as exc:
        field, reason = _first_error(exc)
        raise GatewayConfigError(field, reason, source=source) from None


def load_config(path: Path | str) -> GatewayConfig:
    """Read and validate a gateway configuration file (module docstring)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GatewayConfigError("", f"cannot read: {exc.strerror or exc}", source=str(path)) from None
    except UnicodeDecodeError:
        raise GatewayConfigError("", "not UTF-8 text", source=str(path)) from None
    return parse_config(text, base=path.resolve().parent, source=str(path))
