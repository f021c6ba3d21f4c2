"""One typed Settings object for the whole platform.

Values come, highest priority first, from keyword arguments, ``OPENAMI_*`` environment variables, an
optional TOML file (``OPENAMI_CONFIG`` or ``./openami.toml``), a secrets directory (``OPENAMI_SECRETS_DIR``,
one file per setting) and the embedded defaults below. The
defaults run on a fresh laptop with nothing installed: SQLite under ``./var/``, the in-process bus and an
embedded MQTT broker. Every port we listen on is a setting, because the machines we run on often have the
standard ports (1883, 8000, 4059) taken by other software.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = "openami.toml"
TENANT_SLUG = r"^[a-z0-9][a-z0-9_-]{0,63}$"


def _config_file() -> Path:
    return Path(os.environ.get("OPENAMI_CONFIG", DEFAULT_CONFIG_FILE))


class Settings(BaseSettings):
    """Everything an OpenAMI process needs to know to build itself (see ``openami.app``)."""

    model_config = SettingsConfigDict(env_prefix="OPENAMI_", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(Path("var"), description="Where embedded defaults keep their files.")
    database_url: str = Field(
        "", description="SQLAlchemy URL; empty means a SQLite file in data_dir (openami.sqlite3)."
    )
    bus_url: str = Field("memory", description="'memory' (in-process) or 'nats://host:port' (JetStream).")
    bus_namespace: str = Field(
        "",
        pattern=r"^([a-z][a-z0-9_-]{0,31})?$",
        description="Separates installations sharing one NATS server.",
    )
    mqtt_url: str = Field(
        "embedded", description="'embedded' (amqtt in this process) or 'mqtt://host:port' (external)."
    )
    mqtt_embedded_host: str = "127.0.0.1"
    mqtt_embedded_port: int = Field(11883, ge=0, le=65535, description="0 picks a free port.")
    mqtt_topic_prefix: str = "openami"
    gateway_link_enabled: bool = Field(
        True, description="Take OpenAMI gateways' sealed envelopes on {prefix}/+/gw/+/link/up."
    )
    gateway_link_shared_group: str = Field(
        "openami-hes",
        pattern=r"^([A-Za-z0-9_-]{1,64})?$",
        description="MQTT 5 shared-subscription group of the gateway link on an external broker, so "
        "several head-end workers split the gateways; empty: every worker gets every envelope.",
    )
    gateway_link_config_resend_s: float = Field(
        300.0,
        ge=0,
        description="A CONFIG a gateway's HEALTH does not report yet is sent again at most this often.",
    )
    lorawan_mqtt_url: str = Field(
        "",
        description="ChirpStack v4's MQTT broker (mqtt:// or mqtts://, credentials in the URL); empty: no "
        "LoRaWAN. 'platform' uses the platform's own broker.",
    )
    lorawan_topic_prefix: str = Field(
        "", pattern=r"^[^+#]*$", description="Prefix of ChirpStack's integration topics, if it has one."
    )
    lorawan_profiles: dict[str, str] = Field(
        default_factory=dict,
        description="ChirpStack device-profile name -> payload codec, for devices whose registration "
        'names none (e.g. {"Elvaco CMi4110": "elvaco-cmi41xx"}).',
    )
    fep_enabled: bool = Field(
        False, description="Accept cellular devices that connect out (docs/operations/fep.md)."
    )
    fep_host: str = Field("127.0.0.1", description="Where the FEP listens; empty: every interface.")
    fep_port: int = Field(4060, ge=0, le=65535, description="The FEP's TCP port; 0 picks one.")
    fep_allow: list[str] = Field(
        default_factory=lambda: ["0.0.0.0/0"],
        description="Networks devices may connect from (CIDR, IPv4 and IPv6); others are closed at once.",
    )
    fep_identify_timeout_s: float = Field(10.0, gt=0, le=300, description="Longest wait for the ident line.")
    fep_ident_pattern: str = Field(
        "",
        description="Regex with a group 'ident' for the identification line; empty: ID:<ident> or <ident>.",
    )
    fep_max_connections: int = Field(10_000, ge=1, le=1_000_000)
    fep_max_per_device: int = Field(1, ge=1, le=64, description="Held connections per device; newest wins.")
    fep_idle_timeout_s: float | None = Field(None, gt=0, description="Close connections silent this long.")
    fep_lend_wait_s: float = Field(
        30.0, ge=0, le=3600, description="Longest a read or command waits for a device's held connection."
    )
    dlms_push_enabled: bool = True
    dlms_push_host: str = "127.0.0.1"
    dlms_push_port: int = Field(
        4059, ge=0, le=65535, description="DLMS push listener, TCP and UDP; 0 picks one."
    )
    dlms_default_tenant: str | None = Field(
        None,
        pattern=TENANT_SLUG,
        description="Tenant of plaintext pushes (no system title).",
    )
    poll_interval_s: int = Field(
        900,
        ge=0,
        le=86400,
        description="Seconds between collection rounds (DLMS, Modbus pull); 0: no polling.",
    )
    poll_concurrency: int = Field(64, ge=1, le=4096, description="Meter sessions open at once in a round.")
    poll_timeout_s: float = Field(
        3.0, gt=0, le=300, description="Longest wait for one Modbus, M-Bus or IEC 62056-21 answer."
    )
    hes_path_limits: dict[
        Literal["gateway", "concentrator", "modem", "port"], Annotated[int, Field(ge=1, le=100_000)]
    ] = Field(
        {"gateway": 4, "concentrator": 4, "modem": 16, "port": 1},
        description="Sessions open at once per communication path, by path kind "
        "(docs/operations/throttling.md); a kind left out is unlimited.",
    )
    hes_path_rates: dict[
        Literal["gateway", "concentrator", "modem", "port"], Annotated[float, Field(gt=0, le=100_000)]
    ] = Field(
        default_factory=dict,
        description="New connections per second per communication path, by path kind; none: unlimited.",
    )
    hes_plan_horizon_s: int = Field(
        3600, ge=60, le=7 * 86400, description="How far ahead the scheduler plans jobs from schedules."
    )
    hes_catch_up_days: int = Field(
        7, ge=1, le=366, description="How far back missing load-profile intervals are re-read."
    )
    hes_catch_up_interval_s: int = Field(
        3600,
        ge=60,
        le=7 * 86400,
        description="Seconds between gap searches; also how long a catch-up job may wait to start.",
    )
    dlms_timeout_s: float = Field(10.0, gt=0, le=300, description="Longest wait for one DLMS answer.")
    dlms_client_system_title: str = Field(
        "4F50454E414D4931",
        pattern=r"^[0-9A-Fa-f]{16}$",
        description="The head-end's own DLMS system title (8 bytes as hex), used in ciphered sessions.",
    )
    dlms_clock_threshold_s: float = Field(
        10.0, ge=0, description="A meter clock off by more than this is set during collection."
    )
    dlms_backfill_days: int = Field(
        7, ge=1, le=366, description="How far back the first read of a new DLMS meter's load profile goes."
    )
    wmbus_receivers: dict[str, list[str]] = Field(
        default_factory=dict,
        description="wM-Bus receivers read by the head-end itself, per tenant: "
        '{"acme": ["wmbus+tcp://10.0.0.5:2001", "wmbus+serial:///dev/ttyUSB0?baud=115200"]}.',
    )
    web_host: str = "127.0.0.1"
    web_port: int = Field(8000, ge=0, le=65535)
    token_ttl_hours: int = Field(12, ge=1, le=24 * 90)
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    ingest_batch_rows: int = Field(5000, ge=1, description="Rows the ingest service groups per write.")
    ingest_flush_ms: int = Field(200, ge=1, description="Longest a reading waits before it is written.")
    hes_jobs: bool = Field(
        True, description="Run a scheduler (leader or standby) and a job poller inside `openami serve`."
    )
    hes_lease_s: float = Field(
        60.0, ge=1, le=3600, description="A running job's lease; a worker silent this long loses its jobs."
    )
    hes_tick_s: float = Field(
        2.0, gt=0, le=60, description="How often the scheduler releases, sweeps and dispatches jobs."
    )
    hes_dispatch_batch: int = Field(100, ge=1, le=1000, description="Jobs of one path per dispatch message.")
    hes_dispatch_stale_s: float = Field(
        300.0, ge=5, le=86400, description="A dispatch not taken this long is sent again."
    )
    hes_worker_sessions: int = Field(
        16, ge=1, le=1024, description="Bulk dispatches a poller works on at once (each one a session)."
    )
    hes_retry_base_s: float = Field(
        30.0, gt=0, le=86400, description="The first retry's longest wait (full jitter)."
    )
    hes_retry_cap_s: float = Field(1800.0, gt=0, le=86400, description="Longest wait between attempts.")
    hes_leader_name: str = Field(
        "openami-scheduler", min_length=1, max_length=120, description="The scheduler leader lock's name."
    )
    hes_bulk_approval_threshold: int = Field(
        1, ge=0, le=1_000_000, description="A disconnect of more meters than this needs a second approver."
    )
    master_key: SecretStr = Field(
        SecretStr(""),
        description="64 hex chars (32 bytes) encrypting meter keys at rest; empty: data_dir/master.key, "
        "generated with mode 0600 on first use.",
    )

    @field_validator("bus_url")
    @classmethod
    def _check_bus(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("nats://", "tls://")):
            raise ValueError("bus_url must be 'memory' or a nats:// URL")
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt(cls, value: str) -> str:
        if value != "embedded" and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("mqtt_url must be 'embedded' or an mqtt:// URL")
        return value

    @field_validator("lorawan_mqtt_url")
    @classmethod
    def _check_lorawan(cls, value: str) -> str:
        if value not in ("", "platform") and not value.startswith(("mqtt://", "mqtts://")):
            raise ValueError("lorawan_mqtt_url must be empty, 'platform' or an mqtt:// URL")
        return value

    @field_validator("lorawan_profiles")
    @classmethod
    def _check_profiles(cls, value: dict[str, str]) -> dict[str, str]:
        from openami.protocols.lorawan.codecs import known

        unknown = sorted(set(value.values()) - known())
        if unknown:
            raise ValueError(
                f"lorawan_profiles: no codec {', '.join(unknown)} (known: {', '.join(sorted(known()))})"
            )
        return value

    @field_validator("fep_allow")
    @classmethod
    def _check_fep_allow(cls, value: list[str]) -> list[str]:
        from openami.hes.fep import parse_allow_list

        parse_allow_list(value)  # ValueError: empty list, malformed network, host bits set
        return value

    @field_validator("fep_ident_pattern")
    @classmethod
    def _check_fep_pattern(cls, value: str) -> str:
        if value:
            from openami.hes.fep import compile_ident_pattern

            compile_ident_pattern(value)  # needs a group named 'ident'
        return value

    @field_validator("wmbus_receivers")
    @classmethod
    def _check_receivers(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        from openami.drivers.wmbus.receiver import parse_receiver_url

        for tenant, urls in value.items():
            if not re.match(TENANT_SLUG, tenant):
                raise ValueError(f"wmbus_receivers: {tenant!r} is not a tenant slug")
            for url in urls:
                parse_receiver_url(url)  # a WmbusReceiverUrlError is a ValueError: reported at load
        return value

    @property
    def effective_database_url(self) -> str:
        """The database URL to use, with the SQLite default resolved under data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'openami.sqlite3').as_posix()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        sources.append(file_secret_settings)
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Build Settings from the environment, the TOML file and the secrets directory, overrides on top.

    Credentials travel inside URLs (database, bus, MQTT). Rather than putting them in the environment or
    the TOML file, operators can leave one file per setting in ``OPENAMI_SECRETS_DIR`` (for example
    ``/run/secrets/openami_database_url``), as container orchestrators mount secrets.
    """
    secrets_dir = os.environ.get("OPENAMI_SECRETS_DIR") or None
    return Settings(_secrets_dir=secrets_dir, **{k: v for k, v in overrides.items() if v is not None})
