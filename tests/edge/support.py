"""What the gateway tests share: a head-end peer speaking the real envelope codec, a Mosquitto process of
the test's own (plain or TLS, stoppable and restartable on the same port), TLS material, and configs.

The peer is the head-end's side of ``docs/drivers/gateway-link.md`` written from the contract: it opens
uplink envelopes with an :class:`Opener` (direction UP), keeps each batch once by sequence number,
acknowledges with ACK envelopes sealed under the gateway's key (direction DOWN, its own counter), and
answers TIME requests. It is a real peer over a real broker, not a mock of the agent's collaborators.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from openami.protocols.edge import Direction, EdgeLinkError, Kind, Opener, ReplayError, seal
from openami.simulator.edge_site import gateway_toml

KEY = bytes(range(32))
TENANT = "acme"
PREFIX = "openami"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.05) -> None:
    """Wait until ``check()`` holds, failing with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(step_s)


def points(payload: bytes) -> list[tuple[str, str, str]]:
    """(meter, channel, ts) of every reading in a BATCH payload."""
    body = json.loads(payload)
    return [(s["meter"], s["channel"], p[0]) for s in body["series"] for p in s["points"]]


@dataclass
class HeadEndPeer:
    """The head-end's end of one gateway's link (module docstring)."""

    url: str
    gateway: str
    key: bytes = KEY
    tenant: str = TENANT
    prefix: str = PREFIX
    version: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V5
    tls_context: ssl.SSLContext | None = None
    ack: bool = True
    raw: list[bytes] = field(default_factory=list)
    received: Counter[int] = field(default_factory=Counter)
    accepted: Counter[int] = field(default_factory=Counter)
    kinds: dict[int, Kind] = field(default_factory=dict)
    batches: dict[int, bytes] = field(default_factory=dict)
    health: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)
    times: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    downlinks: list[bytes] = field(default_factory=list)
    down_seq: int = 0
    _client: aiomqtt.Client | None = None
    _task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.opener = Opener(self.key, self.gateway, direction=Direction.UP)
        base = f"{self.prefix}/{self.tenant}/gw/{self.gateway}/link"
        self.up, self.down = f"{base}/up", f"{base}/down"

    async def connect(self) -> None:
        self._client = aiomqtt.Client(
            "127.0.0.1",
            int(self.url.rsplit(":", 1)[1]),
            protocol=self.version,
            identifier=f"peer-{os.urandom(4).hex()}",
            tls_context=self.tls_context,
        )
        await self._client.__aenter__()
        await self._client.subscribe(self.up, qos=1)
        self._task = asyncio.create_task(self._receive())

    async def disconnect(self) -> None:
        """Drop the connection (state kept: :meth:`connect` again after a broker restart)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await task
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError, Exception):
                await client.__aexit__(None, None, None)

    async def __aenter__(self) -> HeadEndPeer:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.disconnect()

    async def _receive(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            payload = message.payload
            assert isinstance(payload, bytes)
            await self.take(payload)

    async def take(self, data: bytes) -> None:
        self.raw.append(data)
        try:
            envelope = self.opener.open(data)
        except ReplayError as exc:
            self.received[exc.seq] += 1
            if self.kinds.get(exc.seq) is Kind.BATCH and self.ack:
                await self.send(Kind.ACK, {"acked": [exc.seq]})  # a resend: acknowledged again
            return
        except EdgeLinkError as exc:
            self.refused.append(str(exc))
            return
        seq = envelope.seq
        self.received[seq] += 1
        self.accepted[seq] += 1
        self.kinds[seq] = envelope.kind
        body = json.loads(envelope.payload)
        if envelope.kind is Kind.BATCH:
            self.batches[seq] = envelope.payload
            if self.ack:
                await self.send(Kind.ACK, {"acked": [seq]})
        elif envelope.kind is Kind.HEALTH:
            self.health.append(body)
        elif envelope.kind is Kind.ALARM:
            self.alarms.append(body)
        elif envelope.kind is Kind.TIME:
            self.times.append(body)
            t2 = time.time()
            await self.send(Kind.TIME, {"t1": body["t1"], "t2": t2, "t3": time.time()})

    async def send(self, kind: Kind, body: dict[str, Any], *, seq: int | None = None) -> bytes:
        """Seal and publish one downlink envelope; returns its bytes (to replay or tamper with)."""
        if seq is None:
            self.down_seq += 1
            seq = self.down_seq
        data = seal(self.key, self.gateway, kind, seq, json.dumps(body).encode(), direction=Direction.DOWN)
        await self.publish_raw(data)
        self.downlinks.append(data)
        return data

    async def publish_raw(self, data: bytes) -> None:
        assert self._client is not None
        await self._client.publish(self.down, data, qos=1)

    async def ack_all(self) -> None:
        if self.batches:
            await self.send(Kind.ACK, {"acked": sorted(self.batches)})

    def readings(self) -> list[tuple[str, str, str]]:
        return [p for payload in self.batches.values() for p in points(payload)]

    def opened(self) -> dict[int, set[tuple[Kind, bytes]]]:
        """Every captured envelope opened on its own (no replay window): seq -> {(kind, payload)}.
        A number used for two different contents shows up as a set of two."""
        found: dict[int, set[tuple[Kind, bytes]]] = {}
        for data in self.raw:
            envelope = Opener(self.key, self.gateway, direction=Direction.UP).open(data)
            found.setdefault(envelope.seq, set()).add((envelope.kind, envelope.payload))
        return found


# -- Mosquitto ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path) -> TlsFiles:
    """A CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "OpenAMI test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


class Mosquitto:
    """A Mosquitto broker of the test's own on 127.0.0.1 (an ephemeral port kept across restarts)."""

    def __init__(self, directory: Path, *, tls: TlsFiles | None = None) -> None:
        self.directory = directory
        self.tls = tls
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "persistence false", "user root"]
        if self.tls is not None:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}"]
            lines += ["tls_version tlsv1.2"]
        path = self.directory / f"mosquitto-{self.port}.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, timeout_s: float = 10.0) -> None:
        config = self._config()
        log = (self.directory / "mosquitto.log").open("ab")
        self._process = subprocess.Popen(["mosquitto", "-c", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout_s
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def write_config(
    directory: Path,
    *,
    gateway: str,
    url: str,
    meters: list[dict[str, Any]],
    mqtt_version: str = "5",
    ca_file: Path | None = None,
    uplink: dict[str, Any] | None = None,
    **settings: Any,
) -> Path:
    """A gateway config file with the test key, fast timers, and ``settings`` on top."""
    (directory / "link.key").write_text(KEY.hex() + "\n")
    link: dict[str, Any] = {
        "url": url,
        "key_file": "link.key",
        "mqtt_version": mqtt_version,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        "ack_timeout_s": 5.0,
    }
    if ca_file is not None:
        link["ca_file"] = str(ca_file)
    link.update(uplink or {})
    values: dict[str, Any] = {
        "poll_interval_s": 1,
        "forward_interval_s": 0.5,
        "health_interval_s": 60.0,
        "time_sync_interval_s": 60.0,
        "read_timeout_s": 1.0,
        "compression": "zstd",
    }
    values.update(settings)
    text = gateway_toml(id=gateway, tenant=TENANT, archive="archive.db", uplink=link, meters=meters, **values)
    path = directory / "gateway.toml"
    path.write_text(text)
    return path


def dlms_tcp_meters(meters: list[Any], ports: list[int]) -> list[dict[str, Any]]:
    """The agent's meter list for simulated DLMS meters over TCP (``sim.serial``, ``sim.keys``) with HLS
    keys, one per port."""
    return [
        {
            "serial": sim.serial,
            "protocol": "dlms",
            "address": f"tcp://127.0.0.1:{port}",
            "keys": {
                "encryption": sim.keys.encryption_key.hex(),
                "authentication": sim.keys.authentication_key.hex(),
            },
        }
        for sim, port in zip(meters, ports, strict=True)
    ]
