"""The core schema (ARCHITECTURE.md section 5) as SQLAlchemy Core tables.

Core rather than ORM because the hot paths (bulk ingest, billing runs) are set-based; repositories map
rows to small dataclasses. Every business table carries ``tenant_id`` and every repository query filters
on it (see ``openami.store.repositories``). Readings are never updated in place: an edit or a changed
re-delivery adds a version. On PostgreSQL the two reading tables are range-partitioned by month (the
partitions are created on demand by ``openami.store.partitions``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)

from openami.store.types import UTCDateTime, json_type

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: BigInteger ids on PostgreSQL, plain INTEGER on SQLite so they stay rowid aliases (autoincrement).
Id = BigInteger().with_variant(Integer(), "sqlite")

UTILITIES = ("electricity", "water", "gas", "heat")
MONEY = Numeric(16, 4)


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _tenant() -> Column[int]:
    return Column("tenant_id", Id, ForeignKey("tenant.id", ondelete="RESTRICT"), nullable=False, index=True)


def _created() -> Column[object]:
    return Column("created_at", UTCDateTime(), nullable=False, server_default=func.current_timestamp())


tenant = Table(
    "tenant",
    metadata,
    _id(),
    Column("slug", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("currency", String(3), nullable=False, server_default="EUR"),
    _created(),
)

app_user = Table(
    "app_user",
    metadata,
    _id(),
    _tenant(),
    Column("username", String(120), nullable=False),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(32), nullable=False),
    Column("full_name", String(200), nullable=False, server_default=""),
    Column("email", String(254)),
    Column("customer_id", Id, ForeignKey("customer.id", ondelete="SET NULL")),
    Column("is_active", Boolean, nullable=False, server_default="1"),
    Column("is_platform_admin", Boolean, nullable=False, server_default="0"),
    Column("last_login_at", UTCDateTime()),
    _created(),
    UniqueConstraint("tenant_id", "username", name="uq_app_user_tenant_username"),
)

api_token = Table(
    "api_token",
    metadata,
    _id(),
    Column("user_id", Id, ForeignKey("app_user.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # session | api
    Column("name", String(120), nullable=False, server_default=""),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("last_used_at", UTCDateTime()),
    _created(),
)

customer = Table(
    "customer",
    metadata,
    _id(),
    _tenant(),
    Column("number", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(16), nullable=False, server_default="residential"),
    Column("email", String(254)),
    Column("phone", String(32)),
    Column("address", Text),
    _created(),
    UniqueConstraint("tenant_id", "number", name="uq_customer_tenant_number"),
)

account = Table(
    "account",
    metadata,
    _id(),
    _tenant(),
    Column("customer_id", Id, ForeignKey("customer.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("number", String(64), nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("currency", String(3), nullable=False, server_default="EUR"),
    Column("balance", MONEY, nullable=False, server_default="0"),
    Column("billing_address", Text),
    _created(),
    UniqueConstraint("tenant_id", "number", name="uq_account_tenant_number"),
)

service_point = Table(
    "service_point",
    metadata,
    _id(),
    _tenant(),
    Column("parent_id", Id, ForeignKey("service_point.id", ondelete="RESTRICT"), index=True),
    Column("account_id", Id, ForeignKey("account.id", ondelete="SET NULL"), index=True),
    Column("code", String(64), nullable=False),
    Column("kind", String(16), nullable=False, server_default="point"),  # building|apartment|premise|point
    Column("utility", String(16)),
    Column("address", Text),
    Column("latitude", Float),
    Column("longitude", Float),
    _created(),
    UniqueConstraint("tenant_id", "code", name="uq_service_point_tenant_code"),
    CheckConstraint(
        "utility IS NULL OR utility IN ('electricity','water','gas','heat')", name="utility_known"
    ),
)

comm_device = Table(
    "comm_device",
    metadata,
    _id(),
    _tenant(),
    Column("parent_id", Id, ForeignKey("comm_device.id", ondelete="RESTRICT"), index=True),
    Column("ident", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # gateway | concentrator | modem
    Column("model", String(120), nullable=False, server_default=""),
    Column("protocol", String(32), nullable=False, server_default="mqtt-json"),
    Column("address", String(255)),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("key_ref", String(120)),
    Column("last_seen_at", UTCDateTime()),
    _created(),
    UniqueConstraint("tenant_id", "ident", name="uq_comm_device_tenant_ident"),
)

meter = Table(
    "meter",
    metadata,
    _id(),
    _tenant(),
    Column("serial", String(64), nullable=False),
    Column("manufacturer", String(120), nullable=False, server_default=""),
    Column("model", String(120), nullable=False, server_default=""),
    Column("medium", String(16), nullable=False),
    Column("protocol", String(32), nullable=False),
    Column("multiplier", Numeric(12, 6), nullable=False, server_default="1"),
    Column("dials", SmallInteger),
    Column("firmware", String(64)),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("comm_device_id", Id, ForeignKey("comm_device.id", ondelete="SET NULL"), index=True),
    Column("installed_at", UTCDateTime()),
    Column("removed_at", UTCDateTime()),
    _created(),
    UniqueConstraint("tenant_id", "serial", name="uq_meter_tenant_serial"),
    CheckConstraint("medium IN ('electricity','water','gas','heat')", name="medium_known"),
)

meter_installation = Table(
    "meter_installation",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column(
        "service_point_id",
        Id,
        ForeignKey("service_point.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    ),
    Column("installed_at", UTCDateTime(), nullable=False),
    Column("removed_at", UTCDateTime()),
)

channel = Table(
    "channel",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="RESTRICT"), nullable=False),
    Column("code", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # interval | register
    Column("unit", String(16), nullable=False, server_default=""),
    Column("interval_s", Integer),
    Column("direction", String(16), nullable=False, server_default="import"),
    _created(),
    UniqueConstraint("meter_id", "code", name="uq_channel_meter_code"),
    CheckConstraint("kind IN ('interval','register')", name="kind_known"),
)


def _reading_table(name: str) -> Table:
    """interval_read and register_read share one shape; (channel, ts, version) is the identity."""
    return Table(
        name,
        metadata,
        Column("channel_id", Id, nullable=False),
        Column("ts", UTCDateTime(), nullable=False),
        Column("version", SmallInteger, nullable=False, server_default="1"),
        Column("value", Float, nullable=False),
        Column("quality", Integer, nullable=False, server_default="0"),
        Column("source", String(32), nullable=False, server_default=""),
        Column("received_at", UTCDateTime(), nullable=False),
        PrimaryKeyConstraint("channel_id", "ts", "version", name=f"pk_{name}"),
        postgresql_partition_by="RANGE (ts)",
    )


interval_read = _reading_table("interval_read")
register_read = _reading_table("register_read")
READING_TABLES = {"interval": interval_read, "register": register_read}

event = Table(
    "event",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="SET NULL"), index=True),
    Column("comm_device_id", Id, ForeignKey("comm_device.id", ondelete="SET NULL")),
    Column("ts", UTCDateTime(), nullable=False),
    Column("code", String(64), nullable=False),
    Column("severity", String(16), nullable=False, server_default="info"),
    Column("state", String(16), nullable=False, server_default="open"),
    Column("source", String(32), nullable=False, server_default=""),
    Column("detail", json_type(), nullable=False, server_default="{}"),
    Column("dedup_key", String(64), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "dedup_key", name="uq_event_tenant_dedup"),
    Index("ix_event_tenant_ts", "tenant_id", "ts"),
)

job = Table(
    "job",
    metadata,
    _id(),
    _tenant(),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False, server_default="planned"),  # openami.hes.jobstate.State
    Column("lane", SmallInteger, nullable=False, server_default="3"),  # openami.hes.jobstate.Lane
    Column("target_type", String(32)),
    Column("target_id", Id),
    Column("params", json_type(), nullable=False, server_default="{}"),
    Column("scheduled_for", UTCDateTime()),  # the slot or moment the job is for
    Column("not_before", UTCDateTime()),  # may not be taken earlier (the slot, or a retry's backoff)
    Column("deadline", UTCDateTime()),  # not started by then: failed, never run late
    Column("dedup_key", String(200)),  # planned jobs: schedule, target and slot; unique per tenant
    Column("path", String(128)),  # communication path for throttling (concentrator, modem pool, port)
    Column("schedule_id", Id, ForeignKey("schedule.id", ondelete="SET NULL")),
    Column("worker", String(64)),
    Column("lease_until", UTCDateTime()),
    Column("dispatched_at", UTCDateTime()),  # when its id was last put on the bus (ADR 0013)
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    Column("attempts", SmallInteger, nullable=False, server_default="0"),
    Column("max_attempts", SmallInteger, nullable=False, server_default="3"),
    Column("outcome", String(32)),
    Column("error", Text),
    Column("created_by", Id, ForeignKey("app_user.id", ondelete="SET NULL")),
    _created(),
    Index("ix_job_tenant_state", "tenant_id", "state"),
    Index("ix_job_dispatch", "state", "lane", "not_before"),
    Index("ix_job_lease", "state", "lease_until"),
    Index("ix_job_path", "path", "state"),
    UniqueConstraint("tenant_id", "dedup_key", name="uq_job_tenant_dedup"),
)

command = Table(
    "command",
    metadata,
    _id(),
    _tenant(),
    Column("job_id", Id, ForeignKey("job.id", ondelete="SET NULL"), index=True),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("kind", String(32), nullable=False),  # connect | disconnect | time_sync | firmware | config
    Column("state", String(16), nullable=False, server_default="requested"),
    Column("params", json_type(), nullable=False, server_default="{}"),
    Column("result", json_type()),
    Column("requested_by", Id, ForeignKey("app_user.id", ondelete="SET NULL")),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
)

schedule = Table(
    "schedule",
    metadata,
    _id(),
    _tenant(),
    Column("name", String(120), nullable=False),
    Column("kind", String(32), nullable=False),  # openami.hes.planner: registers | load_profile | ...
    Column("cron", String(120), nullable=False),
    Column("timezone", String(64)),  # read the cron in this zone; the tenant's when null
    Column("target_filter", json_type(), nullable=False, server_default="{}"),
    Column("lane", SmallInteger, nullable=False, server_default="3"),
    Column("window_s", Integer, nullable=False, server_default="3600"),  # slot + window: the deadline
    Column("max_attempts", SmallInteger, nullable=False, server_default="3"),
    Column("params", json_type(), nullable=False, server_default="{}"),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    Column("next_run_at", UTCDateTime()),
    Column("planned_until", UTCDateTime()),  # slots up to here have their jobs
    _created(),
    UniqueConstraint("tenant_id", "name", name="uq_schedule_tenant_name"),
)

tariff = Table(
    "tariff",
    metadata,
    _id(),
    _tenant(),
    Column("code", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("utility", String(16), nullable=False),
    Column("currency", String(3), nullable=False, server_default="EUR"),
    _created(),
    UniqueConstraint("tenant_id", "code", name="uq_tariff_tenant_code"),
)

tariff_version = Table(
    "tariff_version",
    metadata,
    _id(),
    Column("tariff_id", Id, ForeignKey("tariff.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("valid_from", UTCDateTime(), nullable=False),
    Column("valid_to", UTCDateTime()),
    Column("definition", json_type(), nullable=False),
    Column("source", String(32), nullable=False, server_default="manual"),
    _created(),
)

bill = Table(
    "bill",
    metadata,
    _id(),
    _tenant(),
    Column("account_id", Id, ForeignKey("account.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("tariff_version_id", Id, ForeignKey("tariff_version.id", ondelete="RESTRICT")),
    Column("period_start", UTCDateTime(), nullable=False),
    Column("period_end", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False, server_default="draft"),
    Column("total", MONEY, nullable=False, server_default="0"),
    Column("currency", String(3), nullable=False, server_default="EUR"),
    _created(),
)

bill_line = Table(
    "bill_line",
    metadata,
    _id(),
    Column("bill_id", Id, ForeignKey("bill.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("description", String(255), nullable=False),
    Column("quantity", Numeric(20, 6), nullable=False, server_default="0"),
    Column("unit", String(16), nullable=False, server_default=""),
    Column("unit_price", Numeric(20, 8), nullable=False, server_default="0"),
    Column("amount", MONEY, nullable=False),
    Column("tax_rate", Numeric(6, 4), nullable=False, server_default="0"),
)

invoice = Table(
    "invoice",
    metadata,
    _id(),
    _tenant(),
    Column("bill_id", Id, ForeignKey("bill.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("number", String(64), nullable=False),
    Column("issued_at", UTCDateTime(), nullable=False),
    Column("due_at", UTCDateTime(), nullable=False),
    Column("total", MONEY, nullable=False),
    Column("status", String(16), nullable=False, server_default="issued"),
    Column("document_ref", String(255)),
    UniqueConstraint("tenant_id", "number", name="uq_invoice_tenant_number"),
)

payment = Table(
    "payment",
    metadata,
    _id(),
    _tenant(),
    Column("account_id", Id, ForeignKey("account.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("amount", MONEY, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("method", String(32), nullable=False),
    Column("reference", String(128), nullable=False),
    Column("status", String(16), nullable=False, server_default="settled"),
    UniqueConstraint("tenant_id", "reference", name="uq_payment_tenant_reference"),
)

ledger_entry = Table(
    "ledger_entry",
    metadata,
    _id(),
    _tenant(),
    Column("account_id", Id, ForeignKey("account.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("ts", UTCDateTime(), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("amount", MONEY, nullable=False),
    Column("balance_after", MONEY, nullable=False),
    Column("ref_type", String(32)),
    Column("ref_id", Id),
)

dunning_case = Table(
    "dunning_case",
    metadata,
    _id(),
    _tenant(),
    Column("account_id", Id, ForeignKey("account.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("stage", String(32), nullable=False, server_default="reminder"),
    Column("amount_due", MONEY, nullable=False),
    Column("opened_at", UTCDateTime(), nullable=False),
    Column("next_action_at", UTCDateTime()),
    Column("closed_at", UTCDateTime()),
)

audit_log = Table(
    "audit_log",
    metadata,
    _id(),
    Column("tenant_id", Id, ForeignKey("tenant.id", ondelete="RESTRICT")),
    Column("ts", UTCDateTime(), nullable=False),
    Column("actor", String(160), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32)),
    Column("target_id", String(64)),
    Column("detail", json_type(), nullable=False, server_default="{}"),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
    Index("ix_audit_log_tenant_chain", "tenant_id", "id"),  # finds a chain's last entry fast
)

rejected_message = Table(
    "rejected_message",
    metadata,
    _id(),
    Column("tenant_slug", String(64)),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("source", String(32), nullable=False),
    Column("topic", String(255), nullable=False, server_default=""),
    Column("reason", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Index("ix_rejected_message_received_at", "received_at"),
)

dlms_counter = Table(
    "dlms_counter",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="CASCADE"), nullable=False),
    Column("client_title", String(16), nullable=False),  # the head-end's own system title, hex
    Column("next_value", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    UniqueConstraint("meter_id", "client_title", name="uq_dlms_counter_meter_title"),
)
"""The head-end's next invocation counter towards each meter: meters refuse a counter they have seen."""

device_key = Table(
    "device_key",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="SET NULL"), index=True),
    Column("system_title", String(16), nullable=False),  # 8 bytes as hex: how push listeners find a row
    Column("kind", String(8), nullable=False),  # ek | ak | lls | hls | kek (master key, wraps new keys)
    Column("ciphertext", LargeBinary, nullable=False),  # nonce || AES-GCM ciphertext || tag, never the key
    Column("key_version", Integer, nullable=False, server_default="1"),
    _created(),
    UniqueConstraint("system_title", "kind", name="uq_device_key_system_title_kind"),
    CheckConstraint("kind IN ('ek','ak','lls','hls','kek')", name="kind_known"),
)

gateway_link = Table(
    "gateway_link",
    metadata,
    _id(),
    _tenant(),
    Column("comm_device_id", Id, ForeignKey("comm_device.id", ondelete="CASCADE"), nullable=False),
    Column("key_ciphertext", LargeBinary, nullable=False),  # nonce || AES-GCM(master) || tag, never the key
    Column("key_version", Integer, nullable=False, server_default="1"),
    Column("key_created_at", UTCDateTime(), nullable=False),
    Column("up_highest", BigInteger, nullable=False, server_default="-1"),  # -1: nothing accepted yet
    Column("up_mask", LargeBinary, nullable=False),  # WINDOW/8 bytes, big-endian; bit 0 = up_highest
    Column("next_down_seq", BigInteger, nullable=False, server_default="1"),
    Column("config_version", BigInteger, nullable=False, server_default="0"),
    # The last CONFIG pushed (its payload, version included), sealed like the key: it may carry meter keys.
    Column("config_ciphertext", LargeBinary),
    Column("config_sent_at", UTCDateTime()),  # when it last went to the broker; NULL: not yet (pending)
    Column("last_seen_at", UTCDateTime()),
    Column("health", json_type()),
    Column("health_at", UTCDateTime()),
    _created(),
    UniqueConstraint("comm_device_id", name="uq_gateway_link_comm_device_id"),
)
"""One OpenAMI gateway's end-to-end link (``openami.hes.gateway_link``): its sealed link key, the replay
window of its uplink envelopes, the next downlink sequence number (never reused), its last health."""

gateway_command = Table(
    "gateway_command",
    metadata,
    _id(),
    _tenant(),
    Column("command_id", Id, ForeignKey("command.id", ondelete="CASCADE"), nullable=False),
    Column(
        "comm_device_id", Id, ForeignKey("comm_device.id", ondelete="CASCADE"), nullable=False, index=True
    ),
    Column("meter_serial", String(64), nullable=False),
    Column("deadline", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),  # when it last went to the broker; NULL: due now
    Column("sends", Integer, nullable=False, server_default="0"),
    Column("answered_at", UTCDateTime()),  # the gateway's result recorded
    Column("expired_at", UTCDateTime()),  # the deadline passed without a result: the command failed
    _created(),
    UniqueConstraint("command_id", name="uq_gateway_command_command_id"),
)
"""A command carried out by an OpenAMI gateway (``openami.hes.gateway_commands``): which gateway, until
when, when its COMMAND envelope last went out and when the gateway's result came back."""

PENDING_DEVICE_STATUSES = ("pending", "approved", "rejected")

pending_device = Table(
    "pending_device",
    metadata,
    _id(),
    _tenant(),
    Column("comm_device_id", Id, ForeignKey("comm_device.id", ondelete="CASCADE"), nullable=False),
    Column("protocol", String(32), nullable=False),
    Column("address", String(255), nullable=False, server_default=""),
    Column("ident", String(64), nullable=False),  # the device's own id (M-Bus secondary address, ...)
    Column("manufacturer", String(120), nullable=False, server_default=""),
    Column("medium", String(16)),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False, server_default="pending"),
    Column("decided_at", UTCDateTime()),
    Column("decided_by", String(160)),
    UniqueConstraint("comm_device_id", "protocol", "ident", name="uq_pending_device_gateway_device"),
    CheckConstraint("status IN ('pending','approved','rejected')", name="status_known"),
    Index("ix_pending_device_tenant_status", "tenant_id", "status", "id"),
)
"""Meters a gateway discovered (DISCOVERY envelopes), waiting for an operator to approve or reject them."""

ROUTE_SOURCES = ("registration", "gateway")
_OPEN = "until IS NULL"

meter_route = Table(
    "meter_route",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="RESTRICT"), nullable=False),
    Column("comm_device_id", Id, ForeignKey("comm_device.id", ondelete="RESTRICT"), nullable=False),
    Column("since", UTCDateTime(), nullable=False),
    Column("until", UTCDateTime()),  # NULL: the meter's current route
    Column("hops", json_type()),  # mesh idents, the meter's neighbour first; [] direct; NULL not reported
    Column("quality", json_type(), nullable=False, server_default="{}"),  # rssi, snr, hops when reported
    Column("source", String(16), nullable=False),
    CheckConstraint("source IN ('registration','gateway')", name="source_known"),
    CheckConstraint("until IS NULL OR until >= since", name="period_ordered"),
    Index("ix_meter_route_meter_since", "meter_id", "since"),
    Index(
        "uq_meter_route_open",
        "meter_id",
        unique=True,
        sqlite_where=text(_OPEN),
        postgresql_where=text(_OPEN),
    ),
    Index(
        "ix_meter_route_device_open",
        "tenant_id",
        "comm_device_id",
        sqlite_where=text(_OPEN),
        postgresql_where=text(_OPEN),
    ),
)
"""Through which device each meter was reached, and by which mesh route, over time
(``openami.store.repositories.topology``). At most one open row (``until`` NULL) per meter; a change
closes it at the change time and opens the next, rows are never edited otherwise (a trigger refuses it)."""

device_parent = Table(
    "device_parent",
    metadata,
    _id(),
    _tenant(),
    Column("comm_device_id", Id, ForeignKey("comm_device.id", ondelete="RESTRICT"), nullable=False),
    Column("parent_id", Id, ForeignKey("comm_device.id", ondelete="RESTRICT"), nullable=False),
    Column("since", UTCDateTime(), nullable=False),
    Column("until", UTCDateTime()),  # NULL: the device's current parent
    CheckConstraint("until IS NULL OR until >= since", name="period_ordered"),
    Index("ix_device_parent_device_since", "comm_device_id", "since"),
    Index(
        "uq_device_parent_open",
        "comm_device_id",
        unique=True,
        sqlite_where=text(_OPEN),
        postgresql_where=text(_OPEN),
    ),
    Index(
        "ix_device_parent_parent_open",
        "tenant_id",
        "parent_id",
        sqlite_where=text(_OPEN),
        postgresql_where=text(_OPEN),
    ),
)
"""The history of ``comm_device.parent_id`` (a concentrator moved to another gateway), kept like
``meter_route``: one open row per device that has a parent, closed and followed by the next on a change."""

PROTECTION_KINDS = ("medical", "life_support", "vulnerable")

meter_protection = Table(
    "meter_protection",
    metadata,
    _id(),
    _tenant(),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("created_by", String(160), nullable=False),  # the actor, as in the audit log
    _created(),
    UniqueConstraint("meter_id", "kind", name="uq_meter_protection_meter_kind"),
    CheckConstraint("kind IN ('medical','life_support','vulnerable')", name="kind_known"),
)
"""Why a meter must never be disconnected remotely (``openami.hes.safety``): a row per reason, with who
recorded it, rather than a flag on ``meter``, so a protection's origin is known and a meter may carry
several (a medical device and a vulnerable household)."""

no_disconnect_period = Table(
    "no_disconnect_period",
    metadata,
    _id(),
    _tenant(),
    Column("name", String(120), nullable=False),
    Column("kind", String(8), nullable=False),  # once: starts_at..ends_at | weekly: local week times
    Column("starts_at", UTCDateTime()),
    Column("ends_at", UTCDateTime()),
    Column("from_minute", Integer),  # weekly: minutes since Monday 00:00 local (0..10079)
    Column("to_minute", Integer),  # weekly: end, exclusive; below from_minute: wraps over Sunday night
    Column("created_by", String(160), nullable=False),
    _created(),
    UniqueConstraint("tenant_id", "name", name="uq_no_disconnect_period_tenant_name"),
    CheckConstraint(
        "(kind = 'once' AND starts_at IS NOT NULL AND ends_at > starts_at)"
        " OR (kind = 'weekly' AND from_minute BETWEEN 0 AND 10079 AND to_minute BETWEEN 0 AND 10080"
        " AND from_minute <> to_minute)",
        name="shape",
    ),
)
"""When a tenant disconnects nobody (``openami.hes.safety``): dated periods (holidays, a heat wave) and
weekly windows in the tenant's local time (Friday noon to Monday 08:00)."""

COMMAND_REQUEST_STATES = ("requested", "approved", "rejected", "running", "done")

command_request = Table(
    "command_request",
    metadata,
    _id(),
    _tenant(),
    Column("kind", String(32), nullable=False),
    Column("params", json_type(), nullable=False, server_default="{}"),
    Column("meter_ids", json_type(), nullable=False),
    Column("meter_count", Integer, nullable=False),
    Column("state", String(16), nullable=False, server_default="requested"),
    Column("reason", Text, nullable=False, server_default=""),
    Column("requested_by", Id, ForeignKey("app_user.id", ondelete="RESTRICT"), nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("decided_by", Id, ForeignKey("app_user.id", ondelete="RESTRICT")),
    Column("decided_at", UTCDateTime()),
    Column("decision_reason", Text),
    Column("force_calendar", Boolean, nullable=False, server_default="0"),
    Column("refused", json_type(), nullable=False, server_default="[]"),  # [{meter_id, reason}] at approval
    Column("finished_at", UTCDateTime()),
    CheckConstraint("state IN ('requested','approved','rejected','running','done')", name="state_known"),
    Index("ix_command_request_tenant_state", "tenant_id", "state"),
)
"""A bulk command waiting for (or given) a second user's approval (``openami.hes.command_jobs``)."""

CAMPAIGN_STATES = ("draft", "approved", "running", "paused", "aborted", "stopped_on_failures", "done")

firmware_campaign = Table(
    "firmware_campaign",
    metadata,
    _id(),
    _tenant(),
    Column("name", String(120), nullable=False),
    Column("identifier", String(64), nullable=False),  # the firmware identifier the meters must report
    Column("image", LargeBinary, nullable=False),  # in the database: any poller on any machine sends it
    Column("image_size", Integer, nullable=False),
    Column("image_sha256", String(64), nullable=False),
    Column("waves", json_type(), nullable=False),  # meters per wave, in order: [10, 100, 1000]
    Column("failure_threshold", Float, nullable=False),  # a wave failing more than this fraction stops it
    Column("state", String(24), nullable=False, server_default="draft"),
    Column("current_wave", SmallInteger, nullable=False, server_default="0"),  # 0: none started yet
    Column("meter_count", Integer, nullable=False),
    Column("state_reason", Text),
    Column("created_by", Id, ForeignKey("app_user.id", ondelete="RESTRICT"), nullable=False),
    _created(),
    Column("approved_by", Id, ForeignKey("app_user.id", ondelete="RESTRICT")),
    Column("approved_at", UTCDateTime()),
    Column("started_at", UTCDateTime()),
    Column("finished_at", UTCDateTime()),
    UniqueConstraint("tenant_id", "name", name="uq_firmware_campaign_tenant_name"),
    CheckConstraint(
        "state IN ('draft','approved','running','paused','aborted','stopped_on_failures','done')",
        name="state_known",
    ),
    CheckConstraint("failure_threshold >= 0 AND failure_threshold <= 1", name="threshold_fraction"),
)
"""A firmware upgrade of many meters in staged waves (``openami.hes.campaigns``)."""

campaign_meter = Table(
    "campaign_meter",
    metadata,
    _id(),
    _tenant(),
    Column("campaign_id", Id, ForeignKey("firmware_campaign.id", ondelete="CASCADE"), nullable=False),
    Column("meter_id", Id, ForeignKey("meter.id", ondelete="RESTRICT"), nullable=False),
    Column("wave", SmallInteger, nullable=False),  # 1-based
    Column("state", String(16), nullable=False, server_default="pending"),
    Column("command_id", Id, ForeignKey("command.id", ondelete="SET NULL")),
    Column("error", Text),
    Column("finished_at", UTCDateTime()),
    UniqueConstraint("campaign_id", "meter_id", name="uq_campaign_meter_campaign_meter"),
    CheckConstraint("state IN ('pending','queued','succeeded','failed','cancelled')", name="state_known"),
    Index("ix_campaign_meter_campaign_wave", "campaign_id", "wave", "state"),
)
"""A meter's place in a campaign: its wave, and how its upgrade went (pending until its wave starts)."""
