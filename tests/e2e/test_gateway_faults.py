"""Issue 5's acceptance fault test: the real gateway agent and the real head-end together, through a
link loss, a broker restart and a SIGKILL, with every reading stored exactly once.

Every peer is real and talks over loopback sockets:

- a Mosquitto process of the test's own (MQTT 5, an ephemeral port, stopped and started again on it);
- the head-end, a :class:`~openami.app.Platform` on a SQLite store with the in-process bus and the
  ingest service, its gateway link subscribed to that broker with MQTT 5 and the shared subscription;
  the gateway is registered (``comm_device`` of kind ``gateway``) with its link key in the key vault,
  its meters are the tenant's meters;
- ``openami gateway --config ...`` as a child process, with the same key in its configuration,
  polling every second (compressed time: a poll a second stands for a quarter hour);
- the simulated M-Bus converter and Modbus TCP gateway it polls, in another child process (as
  ``openami bench gateway`` serves them), so neither the agent's reads nor the meters' answers wait
  for the head-end's work in this process.

The scenario: normal operation; the broker is stopped for :data:`POLLS_OFFLINE` polls while the agent
keeps polling and archiving; the broker comes back and the agent forwards its backlog; in the middle of
that the agent is frozen (SIGSTOP) at a moment it has batches on the wire whose acknowledgement it has
not processed, and killed (SIGKILL); it is started again and everything settles. The restarted agent
connects with a clean session (``session_expiry_s = 0``): the head-end's acknowledgements sent to the
dead process are gone with the session, as after a broker restart without persistence, so the agent
must send again batches the head-end has already stored. The test then checks the one thing that
matters: what the gateway archived is in the head-end's store exactly once, nothing more and nothing
less, and nothing is stored twice.

A second, short test kills the broker while the head-end's acknowledgement awaits its PUBACK: the
envelope is counted as failed (not lost from the counters) and the gateway's resend is answered.

Both start their own ``mosquitto`` (CI has it; without the binary they skip, or fail under ``CI=true``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest
from sqlalchemy import Engine, func, select

from openami.app import Platform
from openami.bus.base import SubscribeOptions
from openami.bus.memory import MemoryBus
from openami.config import Settings
from openami.edge.archive import Archive
from openami.hes.gateway_link import GatewayLinkListener, link_topics
from openami.hes.gateway_link_store import GatewayLinkStore
from openami.protocols.edge import Direction, EdgeLinkError, Kind, Opener, peek, seal
from openami.security.keyvault import KeyVault
from openami.store import repositories as repo
from openami.store.engine import make_engine
from openami.store.migrate import upgrade
from openami.store.schema import channel, event, interval_read, meter, register_read, rejected_message
from tests.conftest import IN_CI
from tests.edge.support import PREFIX, TENANT, Mosquitto, eventually, write_config
from tests.hes.support import Collector

pytestmark = pytest.mark.timeout(180)

GATEWAY = "GW-E2E-1"
NEIGHBOUR = "GW-E2E-2"
"""A second registered gateway (its own key), onto whose topic the test moves a captured batch."""
POLLS_OFFLINE = 30
SECURITY_LOG = "openami.security.gateway_link"

_SITE = """
import asyncio, json, sys
from openami.simulator.edge_site import SimulatedSite, serve_site

def ready(meters):
    sys.stdout.write(json.dumps(meters) + "\\n")
    sys.stdout.flush()

asyncio.run(serve_site(SimulatedSite(mbus=2, modbus=2), on_ready=ready))
"""


# -- the peers ---------------------------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Mosquitto:
    if shutil.which("mosquitto") is None:
        if IN_CI:
            pytest.fail("CI must run the gateway fault test: no mosquitto binary on PATH")
        pytest.skip("no mosquitto binary on PATH (apt-get install mosquitto)")
    return Mosquitto(tmp_path)


@contextlib.asynccontextmanager
async def _site(directory: Path) -> AsyncIterator[list[dict[str, str]]]:
    """The simulated meters in a child process; yields their gateway configuration entries."""
    with (directory / "site.log").open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SITE, stdout=asyncio.subprocess.PIPE, stderr=log
        )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        assert line, (directory / "site.log").read_text()[-2000:]
        yield json.loads(line)
    finally:
        if process.returncode is None:
            process.kill()
        await asyncio.wait_for(process.wait(), 10)


@dataclass(frozen=True)
class Round:
    """One polling round as the agent logged it (``openami.hes.poller``)."""

    meters: int
    ok: int
    failed: int
    readings: int


@dataclass
class AgentProcess:
    """``openami gateway`` in its own process; each run logs (JSON lines) to a file of its own."""

    config: Path
    directory: Path
    runs: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def process(self) -> asyncio.subprocess.Process:
        return self.runs[-1]

    def _log(self, run: int) -> Path:
        return self.directory / f"agent-{run + 1}.log"

    async def start(self) -> None:
        with self._log(len(self.runs)).open("ab") as handle:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "openami.cli", "gateway", "--config", str(self.config),
                "--log-format", "json", stdout=handle, stderr=handle,
            )  # fmt: skip
        self.runs.append(process)

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for run in range(len(self.runs)):
            path = self._log(run)
            text = path.read_text() if path.exists() else ""
            for line in text.splitlines():
                with contextlib.suppress(ValueError):
                    found.append(json.loads(line))
        return found

    def rounds(self) -> list[Round]:
        """Every completed round of every run, from the agent's own reports."""
        rounds = []
        for entry in self.lines():
            message = str(entry.get("msg", ""))
            if entry.get("logger") == "openami.hes.poller" and message.startswith("collection round:"):
                words = message.removeprefix("collection round:").replace(",", "").split()
                # "4 meters 4 ok 0 failed 31 readings 0 events 0 clocks set in 0.0 s"
                rounds.append(Round(int(words[0]), int(words[2]), int(words[4]), int(words[6])))
        return rounds

    def tail(self) -> str:
        return "\n".join(self._log(run).read_text()[-3000:] for run in range(len(self.runs)))

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    async def wait(self, timeout_s: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def close(self) -> None:
        for process in self.runs:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 10)


class Capture:
    """A client of the test's own on the broker: what the broker carries on the gateway's uplink topic,
    and a way to publish there (a replay, a tampered copy)."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.broker, self.topic = broker, topic
        self.envelopes: list[bytes] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self._client = aiomqtt.Client(
            "127.0.0.1",
            self.broker.port,
            protocol=aiomqtt.ProtocolVersion.V5,
            identifier=f"capture-{os.urandom(4).hex()}",
        )
        await self._client.__aenter__()
        await self._client.subscribe(self.topic, qos=1)
        self._task = asyncio.create_task(self._receive())

    async def _receive(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            assert isinstance(message.payload, bytes)
            self.envelopes.append(message.payload)

    async def disconnect(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)

    async def publish(self, topic: str, data: bytes) -> None:
        assert self._client is not None
        await self._client.publish(topic, data, qos=1)

    def batches(self) -> list[bytes]:
        return [data for data in self.envelopes if peek(data).kind is Kind.BATCH]


# -- what each side holds ----------------------------------------------------------------------------

Reading = tuple[str, str, int, float]
"""(meter serial, channel, epoch second, value)."""


def _archive(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """A query on the agent's archive through a read-only connection (the agent may be running)."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


_IN_FLIGHT = "SELECT seq FROM outbox WHERE acked IS NULL AND sent_count > 0"


def _backlog(path: Path) -> tuple[int, int]:
    """(readings not cut into a batch yet, batches not acknowledged yet) in the agent's archive."""
    rows = _archive(
        path,
        "SELECT (SELECT count(*) FROM reading WHERE batch IS NULL),"
        " (SELECT count(*) FROM outbox WHERE acked IS NULL)",
    )
    return int(rows[0][0]), int(rows[0][1])


def _polls(path: Path) -> int:
    """Polls with readings in the archive (a poll's readings share its second)."""
    return int(_archive(path, "SELECT count(DISTINCT ts) FROM reading")[0][0])


def _archived(path: Path) -> list[Reading]:
    archive = Archive(path)
    try:
        return [(r.meter, r.channel, int(r.ts.timestamp()), r.value) for r in archive.readings()]
    finally:
        archive.close()


def _stored(engine: Engine) -> tuple[list[Reading], list[int]]:
    """Every reading in the head-end's store, and the version of each."""
    readings: list[Reading] = []
    versions: list[int] = []
    with engine.connect() as conn:
        for table in (register_read, interval_read):
            query = (
                select(meter.c.serial, channel.c.code, table.c.ts, table.c.value, table.c.version)
                .select_from(table)
                .join(channel, channel.c.id == table.c.channel_id)
                .join(meter, meter.c.id == channel.c.meter_id)
            )
            for row in conn.execute(query):
                readings.append((row.serial, row.code, int(row.ts.timestamp()), float(row.value)))
                versions.append(int(row.version))
    return readings, versions


def _count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _dead_letters(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        query = select(rejected_message).where(rejected_message.c.source == "gateway-link")
        return list(conn.execute(query.order_by(rejected_message.c.id)))


def _handled(link: GatewayLinkListener) -> bool:
    """Every envelope the head-end received is done with (its outcome counted)."""
    s = link.stats
    return s.received == s.accepted + s.duplicates + s.refused + s.rejected + s.failed


async def _quiet(link: GatewayLinkListener, quiet_s: float = 0.3, timeout_s: float = 10.0) -> None:
    """Wait until the head-end has handled all it received and nothing new came for ``quiet_s``."""
    deadline = time.monotonic() + timeout_s
    seen, since = -1, time.monotonic()
    while True:
        now = time.monotonic()
        if link.stats.received != seen or not _handled(link):
            seen, since = link.stats.received, now
        elif now - since >= quiet_s:
            return
        if now > deadline:
            raise AssertionError(f"the head-end never went quiet: {link.stats}")
        await asyncio.sleep(0.02)


def _provision(platform: Platform, meters: list[dict[str, str]]) -> bytes:
    """The tenant, the gateway and its neighbour, their link keys, and the gateway's meters; returns
    the gateway's key (generated as ``POST /gateways/{id}/link/key`` generates it)."""
    assert platform.vault is not None

    def medium(entry: dict[str, str]) -> str:
        if entry["protocol"] == "modbus":
            return "electricity" if entry["model"] == "eastron-sdm630" else "heat"
        return "heat" if int(entry["address"].rsplit("=", 1)[1]) % 2 else "water"  # as the site has it

    with platform.engine.begin() as conn:
        tenant_id = repo.tenants.create(conn, {"slug": TENANT, "name": "Acme"}).id
        gateway_id = repo.comm_devices.create(conn, tenant_id, {"ident": GATEWAY, "kind": "gateway"}).id
        neighbour_id = repo.comm_devices.create(conn, tenant_id, {"ident": NEIGHBOUR, "kind": "gateway"}).id
        for entry in meters:
            values = {
                "serial": entry["serial"],
                "medium": medium(entry),
                "protocol": entry["protocol"],
                "comm_device_id": gateway_id,
            }
            repo.meters.create(conn, tenant_id, values)
    key = KeyVault.new_gateway_key()
    platform.vault.store_gateway_key(tenant_id, gateway_id, key)
    platform.vault.store_gateway_key(tenant_id, neighbour_id, KeyVault.new_gateway_key())
    return key


def _gaps(readings: list[Reading]) -> dict[str, list[int]]:
    """Per meter, the distinct poll times (epoch seconds) in order."""
    times: dict[str, set[int]] = defaultdict(set)
    for serial, _, ts, _ in readings:
        times[serial].add(ts)
    return {serial: sorted(found) for serial, found in times.items()}


# -- the test ----------------------------------------------------------------------------------------


@pytest.mark.slow
async def test_outage_broker_restart_and_kill_9_store_every_reading_exactly_once(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger=SECURITY_LOG)
    up, _ = link_topics(PREFIX, TENANT, GATEWAY)
    neighbour_up, _ = link_topics(PREFIX, TENANT, NEIGHBOUR)
    agent_dir = tmp_path / "gateway"
    agent_dir.mkdir()
    timings: dict[str, float] = {}
    began = time.monotonic()

    async with contextlib.AsyncExitStack() as stack:
        mosquitto.start()
        stack.callback(mosquitto.stop)
        meters = await stack.enter_async_context(_site(tmp_path))
        settings = Settings(
            data_dir=tmp_path,
            database_url=f"sqlite:///{tmp_path / 'hes.sqlite3'}",
            mqtt_url=mosquitto.url,
            mqtt_topic_prefix=PREFIX,
            dlms_push_enabled=False,
            poll_interval_s=0,
            ingest_flush_ms=20,
        )
        platform = Platform.build(settings)
        await platform.start()
        stack.push_async_callback(platform.stop)
        link = platform.gateway_link
        assert link is not None
        assert link.mqtt_version == "5" and link.topic_filter.startswith("$share/openami-hes/")
        # The head-end's reconnect back-off doubles up to 30 s: after a 30 s outage it could wait 16 s
        # more before it looks again. Capped here so the test does not spend its time waiting.
        link._subscriber.reconnect_max_s = 1.0
        key = await asyncio.to_thread(_provision, platform, meters)
        assert platform.vault is not None
        store = GatewayLinkStore(platform.engine, platform.vault)

        config = write_config(
            agent_dir,
            gateway=GATEWAY,
            url=mosquitto.url,
            meters=meters,
            health_interval_s=2.0,
            batch_readings=10,  # a backlog of many small batches: the kill lands in the middle of it
            uplink={"window": 2, "session_expiry_s": 0},
        )
        (agent_dir / "link.key").write_text(key.hex() + "\n")  # the key the vault holds, not the test key
        archive = agent_dir / "archive.db"
        capture = Capture(mosquitto, up)
        await capture.connect()
        stack.push_async_callback(capture.disconnect)
        agent = AgentProcess(config, agent_dir)
        stack.push_async_callback(agent.close)
        await agent.start()

        # 1. Normal operation: polls arrive and are acknowledged.
        await eventually(lambda: len(agent.rounds()) >= 3, 20, "three polls")
        await eventually(lambda: link.stats.readings >= 2 * 31, 10, "readings at the head-end")
        batches_online = len(capture.batches())
        assert batches_online >= 2
        timings["online"] = time.monotonic() - began

        # 2. The link is cut: the agent goes on polling and archiving a compressed day.
        await capture.disconnect()
        mosquitto.stop()
        cut_at = time.time()
        polls_before = len(agent.rounds())
        # The head-end notices at once, or, when an answer of its was being published at that moment,
        # after its drain timeout (10 s: aiomqtt does not fail a publish awaiting its PUBACK when the
        # connection drops); either way well within the outage.
        await eventually(lambda: not link.connected, 15, "the head-end to notice")
        timings["noticed_after_s"] = time.time() - cut_at
        timings["late_drains"] = sum("left unhandled" in r.getMessage() for r in caplog.records)
        await eventually(
            lambda: len(agent.rounds()) >= polls_before + POLLS_OFFLINE,
            POLLS_OFFLINE + 15,
            f"{POLLS_OFFLINE} polls without the link",
        )
        unsent, _ = _backlog(archive)
        assert unsent >= POLLS_OFFLINE * 31, "the polls during the outage were not archived"
        timings["outage"] = time.monotonic() - began

        # 3. The broker is back: the agent forwards its backlog; it is frozen and killed in the middle.
        readings_before = link.stats.readings
        mosquitto.start()
        back_at = time.time()
        await capture.connect()
        await eventually(lambda: link.connected, 10, "the head-end to reconnect")
        await eventually(lambda: link.stats.readings > readings_before, 15, "the backlog flowing")
        in_flight: list[int] = []

        def resending() -> bool:
            """Batches on the wire, unacknowledged, with more of the backlog to come, between polls."""
            in_flight[:] = [int(seq) for (seq,) in _archive(archive, _IN_FLIGHT)]
            unsent, _ = _backlog(archive)
            return bool(in_flight) and unsent > 0 and _polls(archive) == len(agent.rounds())

        tries = await _freeze_when(agent, resending, "batches in flight while it forwards its backlog")
        await _quiet(link)  # what was on the wire when the agent froze is handled now
        window = (await asyncio.to_thread(store.load, TENANT, GATEWAY)).window
        assert all(window.seen(seq) for seq in in_flight), "the head-end should hold the in-flight batches"
        duplicates_before = link.stats.duplicates
        agent.signal(signal.SIGKILL)
        assert await agent.wait(10) == -signal.SIGKILL
        timings["killed"] = time.monotonic() - began

        # 4. Started again: what was not acknowledged goes again, the rest of the backlog follows.
        await agent.start()

        def drained() -> bool:
            return _backlog(archive) == (0, 0)

        await eventually(drained, 30, "the backlog drained and acknowledged")
        polls_restarted = len(agent.rounds())
        await eventually(lambda: len(agent.rounds()) >= polls_restarted + 2, 10, "two more polls")
        # Stopped (SIGTERM) between two polls with everything acknowledged: a poll's readings archived
        # during the shutdown would wait in the archive for the next start (correct, but not this test).
        await _freeze_when(agent, lambda: drained() and _polls(archive) == len(agent.rounds()), "idle")
        agent.signal(signal.SIGTERM)
        agent.signal(signal.SIGCONT)
        assert await agent.wait(20) == 0, agent.tail()
        assert drained()
        await _quiet(link)
        await platform.settle()
        timings["settled"] = time.monotonic() - began

        # -- every archived reading is stored exactly once ------------------------------------------
        archived = await asyncio.to_thread(_archived, archive)
        stored, versions = await asyncio.to_thread(_stored, platform.engine)
        assert len(archived) == len(set(archived))
        assert len(stored) == len(set(stored)), "a reading was stored twice"
        assert set(versions) == {1}, "a reading was revised (a version-2 row)"
        assert sorted(stored) == sorted(archived)
        totals = platform.ingest.totals
        assert (totals.revised, totals.rejected) == (0, 0), totals
        assert _count(platform.engine, event) == _archive(archive, "SELECT count(*) FROM event")[0][0]

        # ... and it is what the meters produced: polls x channels, by the agent's own reports.
        rounds = agent.rounds()
        assert rounds and all((r.meters, r.ok, r.failed) == (4, 4, 0) for r in rounds), rounds
        per_round = rounds[0].readings
        assert all(r.readings == per_round for r in rounds)
        assert len(archived) == sum(r.readings for r in rounds) == len(rounds) * per_round
        assert per_round == _count(platform.engine, channel)  # one reading per channel and poll

        # ... over the whole outage: no gap in the polls, and the outage's polls are all there.
        for serial, times in _gaps(archived).items():
            steps = [b - a for a, b in itertools.pairwise(times)]
            assert max(steps) <= 6, f"{serial}: a gap of {max(steps)} s in the polls"  # the restart
            during = [t for t in times if cut_at < t < back_at]
            assert len(during) >= POLLS_OFFLINE, f"{serial}: {len(during)} polls archived in the outage"
            assert all(b - a <= 2 for a, b in itertools.pairwise(during)), serial

        # ... sent again after the kill, acknowledged again, never published twice.
        stats = link.stats
        assert stats.duplicates - duplicates_before >= len(in_flight) >= 1
        assert stats.readings == len(archived), "a resent batch was published again"
        # (``failed`` may be 1 or 2: an ACK still awaiting its PUBACK when the broker went down is
        # given up by the head-end's drain, and its batch is sent again after the reconnect.)
        assert (stats.refused, stats.rejected) == (0, 0), stats
        assert not _dead_letters(platform.engine)
        refused = _archive(archive, "SELECT count(*) FROM outbox WHERE refused IS NOT NULL")[0][0]
        assert refused == 0

        # -- what the broker saw: envelopes only, unreadable without the key ------------------------
        envelopes = capture.envelopes
        assert len(capture.batches()) > batches_online  # captured before the outage and after it
        serials = [entry["serial"].encode() for entry in meters]
        values = {str(int(v)).encode() for *_, v in archived if abs(v) >= 1000}
        assert values
        for data in envelopes:
            assert data[:2] == b"OA"
            assert not any(secret in data for secret in [*serials, *values])
            assert b"series" not in data and b"points" not in data
            with pytest.raises(EdgeLinkError):
                Opener(KeyVault.new_gateway_key(), GATEWAY, direction=Direction.UP).open(data)
        opened = Opener(key, GATEWAY, direction=Direction.UP).open(capture.batches()[0])
        assert any(secret in opened.payload for secret in serials)  # with the key, it is all there

        # -- a tampered batch and a batch moved to another gateway: rejected, logged, not stored ----
        rows_before = _count(platform.engine, register_read) + _count(platform.engine, interval_read)
        accepted = link.stats.accepted
        genuine = capture.batches()[-1]
        tampered = bytearray(genuine)
        tampered[-20] ^= 0x01
        caplog.clear()
        await capture.publish(up, bytes(tampered))
        await capture.publish(neighbour_up, genuine)
        await eventually(lambda: link.stats.rejected == 2, 10, "two rejections")
        # ... and the same batch replayed as captured: a duplicate, acknowledged again, not stored
        duplicates = link.stats.duplicates
        await capture.publish(up, genuine)
        await eventually(lambda: link.stats.duplicates == duplicates + 1, 10, "the replay seen")
        await _quiet(link)
        await platform.settle()
        assert _count(platform.engine, register_read) + _count(platform.engine, interval_read) == rows_before
        assert link.stats.readings == len(archived) and link.stats.accepted == accepted
        letters = _dead_letters(platform.engine)
        assert len(letters) == 2
        assert {letter.topic for letter in letters} == {up, neighbour_up}
        assert all("does not verify" in letter.reason for letter in letters), [x.reason for x in letters]
        assert bytes(tampered) in {bytes(letter.payload) for letter in letters}  # kept as received
        warnings = [r for r in caplog.records if r.name == SECURITY_LOG]
        assert len(warnings) == 2
        assert {getattr(r, "gateway", None) for r in warnings} == {GATEWAY, NEIGHBOUR}
        assert all(getattr(r, "seq", None) == peek(genuine).seq for r in warnings)
        assert all(key.hex() not in r.getMessage() for r in caplog.records)
        timings["done"] = time.monotonic() - began

    seen = {k: round(v, 1) for k, v in timings.items()}
    print(f"seconds since start: {seen}; frozen at try {tries}; head-end: {link.stats}")


async def _freeze_when(
    agent: AgentProcess, qualifies: Callable[[], bool], what: str, attempts: int = 100
) -> int:
    """Freeze the agent (SIGSTOP) at a moment that ``qualifies`` and leave it frozen.

    A frozen moment that does not qualify is let go (SIGCONT) and another is tried a little later, so
    the test picks its moment without racing the agent. Returns the number of tries it took.
    """
    for attempt in range(1, attempts + 1):
        agent.signal(signal.SIGSTOP)
        if qualifies():
            return attempt
        agent.signal(signal.SIGCONT)
        await asyncio.sleep(0.03 + 0.07 * os.urandom(1)[0] / 255)
    raise AssertionError(f"the agent was never frozen with {what}")


class _HeldBus(MemoryBus):
    """The in-process bus, holding every publish until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.go = asyncio.Event()

    async def publish(self, subject: str, data: bytes, **options: Any) -> None:
        self.entered.set()
        await self.go.wait()
        await super().publish(subject, data, **options)


async def test_an_answer_cut_off_by_the_broker_dying_is_counted_and_the_resend_answered(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    """The broker dies while the head-end's ACK awaits its PUBACK: the drain gives the envelope up
    (counted ``failed``, so every received envelope still has one outcome), the gateway sends the batch
    again after the restart, and it is acknowledged again without being published twice."""
    mosquitto.start()
    engine = make_engine(f"sqlite:///{tmp_path / 'link.sqlite3'}")
    upgrade(engine)
    with engine.begin() as conn:
        tenant_id = repo.tenants.create(conn, {"slug": TENANT, "name": "Acme"}).id
        gateway_id = repo.comm_devices.create(conn, tenant_id, {"ident": GATEWAY, "kind": "gateway"}).id
    key = KeyVault.new_gateway_key()
    vault = KeyVault(engine, bytes(32))
    vault.store_gateway_key(tenant_id, gateway_id, key)
    bus = _HeldBus()
    await bus.start()
    collector = Collector()
    await bus.subscribe("readings.>", collector.handle, SubscribeOptions(durable="test"))
    link = GatewayLinkListener(
        mosquitto.url,
        PREFIX,
        bus,
        engine,
        vault,
        drain_timeout_s=0.5,
        reconnect_min_s=0.1,
        reconnect_max_s=0.5,
    )
    up, _ = link_topics(PREFIX, TENANT, GATEWAY)
    body = {"series": [{"meter": "MB-1", "channel": "energy", "unit": "Wh", "kind": "register",
                        "interval_s": None, "points": [["2026-12-01T00:15:00+00:00", 1.0, 0]]}]}  # fmt: skip
    envelope = seal(key, GATEWAY, Kind.BATCH, 5, json.dumps(body).encode())
    process = mosquitto._process  # the helper's own process handle: frozen, then killed
    assert process is not None
    await link.start()
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as gateway:
            await gateway.publish(up, envelope, qos=1)
            await asyncio.wait_for(bus.entered.wait(), 10)
            process.send_signal(signal.SIGSTOP)  # the ACK that follows gets no PUBACK
            bus.go.set()
            await eventually(lambda: link.stats.acks_sent == 0 and collector.batches != [], 10, "the publish")
            await asyncio.sleep(0.2)  # the ACK is on its way into the frozen broker
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        await eventually(lambda: _handled(link), 10, "the envelope given up and counted")
        assert (link.stats.received, link.stats.failed) == (1, 1), link.stats
        mosquitto.start()
        await eventually(lambda: link.connected, 10, "the head-end back on the broker")
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as gateway:
            await gateway.publish(up, envelope, qos=1)  # the gateway never saw an ACK: it sends again
            await eventually(lambda: link.stats.duplicates == 1, 10, "the resend")
        assert link.stats.acks_sent == 1 and _handled(link)
        await bus.drain()
        assert len(collector.batches) == 1  # published once
    finally:
        await link.stop()
        await bus.close()
        mosquitto.stop()
        engine.dispose()
