"""A head-end's worth of simulated meters (100,000 and more), some flaky, some dead, in their own processes.

``openami bench hes`` needs a fleet a head-end would read in a day, cheap enough to serve from one or two
processes of a 2-core machine while the workers read it. Meters sit behind converters as in the field:
wired M-Bus meters on M-Bus-to-TCP converters (:class:`FleetMbusConverter`, up to 250 primary addresses
each) and Modbus meters behind Modbus TCP gateways (:class:`FleetModbusGateway`, up to 247 unit ids
each), so 100,000 meters are about 400 listening ports. Both speak the real wire protocol (they are the
simulators of :mod:`~openami.simulator.mbus_meter` and :mod:`~openami.simulator.modbus_meter`); the
head-end's collectors cannot tell them from the single-site simulators.

Failures are what a head-end must live with, and they are injected the way the field shows them:

- a *dead* meter is absent from its bus or gateway: every request to it goes unanswered;
- a *flaky* meter stays silent for a whole read session (one TCP connection: the collectors open one
  per read) with probability ``flaky_rate``, and answers normally otherwise. Whether its *n*-th session
  is silent is a pure function of (seed, meter, *n*) (:func:`silent_session`), so a test run again sees
  the same failures in the same order.

Which meters are flaky and which dead, their serials, protocols and places are all derived from a
:class:`FleetSpec` alone, so the process that serves a part of the fleet and the one that registers it
in the store agree without exchanging more than the ports the servers got (:class:`FleetProcesses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import random
import struct
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import cached_property
from multiprocessing.connection import Connection
from typing import Any, Final, Literal, Self

from openami.drivers.modbus.models import HEAT, SDM630
from openami.protocols.mbus.frames import MbusFrame
from openami.simulator.mbus_meter import Answer, MbusBusSimulator, heat_meter, water_meter
from openami.simulator.modbus_meter import ModbusSimulator, SimulatedModbusMeter, respond
from openami.simulator.tcp_server import LoopbackServer

__all__ = [
    "MBUS_PER_CONVERTER",
    "MODBUS_PER_GATEWAY",
    "Endpoint",
    "FleetMbusConverter",
    "FleetMeter",
    "FleetModbusGateway",
    "FleetProcesses",
    "FleetSpec",
    "SessionStats",
    "SimulatedFleet",
    "meter_address",
    "silent_session",
]

MBUS_PER_CONVERTER: Final = 250
MODBUS_PER_GATEWAY: Final = 247
_MBUS_ID_BASE: Final = 10_000_000
"""M-Bus identification numbers are ``_MBUS_ID_BASE + meter index`` (8 digits up to 89,999,999 meters)."""
_STOP: Final = "stop"

Wire = Literal["mbus", "modbus"]


def silent_session(seed: int, meter: int, session: int, rate: float) -> bool:
    """Whether flaky meter ``meter`` stays silent in its ``session``-th session (from 0): a pure function,
    the same in every process and run."""
    digest = hashlib.blake2b(f"{seed}:{meter}:{session}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < rate


@dataclass(frozen=True, slots=True)
class FleetMeter:
    """One meter of the fleet: ``unit`` is its Modbus unit id or M-Bus primary address on ``endpoint``."""

    index: int
    serial: str
    protocol: Wire
    endpoint: int
    unit: int
    model: str
    medium: str


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One converter or gateway: a listening port with its meters behind it."""

    index: int
    protocol: Wire
    meters: tuple[FleetMeter, ...]

    @property
    def ident(self) -> str:
        """The converter's name as the store knows it (``comm_device.ident``)."""
        return f"SIM-{'MBUS' if self.protocol == 'mbus' else 'MODBUS'}-{self.index:05d}"

    def address(self, host: str, port: int) -> str:
        """The converter's own address (without a meter on it)."""
        return f"{self.protocol}+tcp://{host}:{port}"


def meter_address(meter: FleetMeter, host: str, port: int) -> str:
    """A meter's address behind its converter, as the collectors parse it."""
    option = "primary" if meter.protocol == "mbus" else "unit"
    return f"{meter.protocol}+tcp://{host}:{port}?{option}={meter.unit}"


@dataclass(frozen=True, slots=True)
class FleetSpec:
    """``meters`` meters, ``modbus_share`` of them Modbus (the rest wired M-Bus); ``flaky`` and ``dead``
    the fractions of meters failing sometimes (silent in a session with probability ``flaky_rate``) or
    always. Everything about the fleet follows from these fields (module docstring)."""

    meters: int
    modbus_share: float = 0.5
    flaky: float = 0.0
    flaky_rate: float = 0.5
    dead: float = 0.0
    seed: int = 1
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not 1 <= self.meters <= 10_000_000:
            raise ValueError("a fleet has 1 to 10,000,000 meters")
        for name in ("modbus_share", "flaky", "flaky_rate", "dead"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.flaky + self.dead > 1.0:
            raise ValueError("flaky and dead meters together cannot be more than the fleet")

    def endpoints(self) -> list[Endpoint]:
        """The converters and gateways: M-Bus ones first, each full but the last of its protocol. M-Bus
        meters have the indexes below the Modbus ones."""
        mbus = self.meters - round(self.meters * self.modbus_share)
        groups: tuple[tuple[Wire, int, int, int], ...] = (
            ("mbus", 0, mbus, MBUS_PER_CONVERTER),
            ("modbus", mbus, self.meters, MODBUS_PER_GATEWAY),
        )
        found: list[Endpoint] = []
        for protocol, start, stop, per in groups:
            for first in range(start, stop, per):
                where = len(found)
                meters = tuple(
                    _meter(protocol, where, index - first + 1, index)
                    for index in range(first, min(stop, first + per))
                )
                found.append(Endpoint(where, protocol, meters))
        return found

    def failing(self) -> tuple[frozenset[int], frozenset[int]]:
        """(flaky, dead): the indexes of the meters failing sometimes and always, drawn from ``seed``."""
        flaky, dead = round(self.meters * self.flaky), round(self.meters * self.dead)
        chosen = random.Random(self.seed).sample(range(self.meters), flaky + dead)
        return frozenset(chosen[:flaky]), frozenset(chosen[flaky:])


def _meter(protocol: Wire, endpoint: int, unit: int, index: int) -> FleetMeter:
    """Odd places hold heat meters (M-Bus) or Eastron SDM630s (Modbus), even ones water meters (M-Bus)
    or the example heat-meter map (Modbus)."""
    odd = unit % 2 == 1
    if protocol == "mbus":
        return FleetMeter(index, f"MB-{_MBUS_ID_BASE + index:08d}", protocol, endpoint, unit, "",
                          "heat" if odd else "water")  # fmt: skip
    register_map = SDM630 if odd else HEAT
    return FleetMeter(index, f"MOD-{endpoint:05d}-{unit:03d}", protocol, endpoint, unit,
                      register_map.model, "electricity" if odd else "heat")  # fmt: skip


@dataclass
class SessionStats:
    """What the servers of a fleet saw: connections, and sessions a flaky meter stayed silent in."""

    sessions: int = 0
    silent: int = 0

    def __add__(self, other: SessionStats) -> SessionStats:
        return SessionStats(self.sessions + other.sessions, self.silent + other.silent)


_SESSION: ContextVar[dict[int, bool]] = ContextVar("fleet_session")
"""Per connection (each runs in its own task): unit -> whether that flaky meter is silent in it."""


class _Flakiness:
    """Which flaky meters of one endpoint stay silent in the current session (the connection's task)."""

    def __init__(self, spec: FleetSpec, flaky: dict[int, int], stats: SessionStats) -> None:
        self._seed, self._rate, self._flaky, self._stats = spec.seed, spec.flaky_rate, flaky, stats
        self._sessions = dict.fromkeys(flaky, 0)

    def open_session(self) -> None:
        _SESSION.set({})
        self._stats.sessions += 1

    def silent(self, unit: int) -> bool:
        index = self._flaky.get(unit)
        if index is None:
            return False
        session = _SESSION.get(None)
        if session is None:  # outside a connection (sans-IO use): every request is its own session
            session = {}
        if unit not in session:
            count = self._sessions[unit]
            self._sessions[unit] = count + 1
            session[unit] = silent_session(self._seed, index, count, self._rate)
            self._stats.silent += session[unit]
        return session[unit]


class FleetMbusConverter(MbusBusSimulator):
    """An M-Bus-to-TCP converter of the fleet: its flaky meters are silent in some sessions."""

    def __init__(self, host: str, meters: list[Any], flakiness: _Flakiness) -> None:
        super().__init__(meters, host, 0)
        self._flakiness = flakiness

    def answer(self, frame: MbusFrame, baudrate: int | None = None) -> Answer:
        if self._flakiness.silent(frame.address):
            return Answer(None)
        return super().answer(frame, baudrate)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._flakiness.open_session()
        await super()._serve(reader, writer)


_MBAP: Final = struct.Struct(">HHHB")  # Modbus TCP header: transaction, protocol (0), length, unit id
_MAX_FRAME: Final = 260


class FleetModbusGateway(ModbusSimulator):
    """A Modbus TCP gateway of the fleet: its flaky devices are silent in some sessions. The conversation
    is :class:`ModbusSimulator`'s, with the session's silence decided per request."""

    def __init__(self, host: str, meters: dict[int, SimulatedModbusMeter], flakiness: _Flakiness) -> None:
        super().__init__(host, 0, meters)
        self._flakiness = flakiness

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._flakiness.open_session()
        while True:
            transaction, protocol, length, unit = _MBAP.unpack(await reader.readexactly(_MBAP.size))
            if protocol != 0 or not 2 <= length <= _MAX_FRAME:
                return
            pdu = await reader.readexactly(length - 1)
            meter = self.meters.get(unit)
            if meter is None or self._flakiness.silent(unit):
                continue  # dead or silent in this session: no answer, the master times out
            reply = respond(meter, pdu)
            writer.write(_MBAP.pack(transaction, 0, len(reply) + 1, unit) + reply)
            await writer.drain()


def _rising(start: float, per_second: float) -> Callable[[], float]:
    origin = time.time()
    return lambda: start + (time.time() - origin) * per_second


def _modbus_device(meter: FleetMeter) -> SimulatedModbusMeter:
    energy = _rising(1_000_000.0 + meter.index * 10.0, 2.5)
    if meter.model == SDM630.model:
        return SimulatedModbusMeter(SDM630, {"1-0:1.8.0": energy, "1-0:32.7.0": lambda: 230.2,
                                             "1-0:14.7.0": lambda: 50.0})  # fmt: skip
    return SimulatedModbusMeter(HEAT, {"6-0:1.0.0": energy, "6-0:10.0.0": lambda: 65.5})


class SimulatedFleet:
    """Serves ``endpoints`` (by default every endpoint of ``spec``) in the running event loop; use it
    with ``async with``. Dead meters are left off their bus or gateway."""

    def __init__(self, spec: FleetSpec, endpoints: list[Endpoint] | None = None) -> None:
        self.spec = spec
        self.endpoints = spec.endpoints() if endpoints is None else endpoints
        self.servers: dict[int, LoopbackServer] = {}
        self.stats = SessionStats()

    @property
    def ports(self) -> dict[int, int]:
        """Endpoint index -> its listening port (once started)."""
        return {index: server.port for index, server in self.servers.items()}

    def meters(self) -> Iterator[FleetMeter]:
        for endpoint in self.endpoints:
            yield from endpoint.meters

    def address(self, meter: FleetMeter) -> str:
        return meter_address(meter, self.spec.host, self.servers[meter.endpoint].port)

    def endpoint_address(self, endpoint: Endpoint) -> str:
        return endpoint.address(self.spec.host, self.servers[endpoint.index].port)

    def _server(self, endpoint: Endpoint, flaky: frozenset[int], dead: frozenset[int]) -> LoopbackServer:
        alive = [m for m in endpoint.meters if m.index not in dead]
        flakiness = _Flakiness(self.spec, {m.unit: m.index for m in alive if m.index in flaky}, self.stats)
        if endpoint.protocol == "mbus":
            bus = [
                heat_meter(m.unit, m.serial[3:], 100_000 + m.index)
                if m.medium == "heat"
                else water_meter(m.unit, m.serial[3:], 50_000 + m.index)
                for m in alive
            ]
            return FleetMbusConverter(self.spec.host, bus, flakiness)
        return FleetModbusGateway(self.spec.host, {m.unit: _modbus_device(m) for m in alive}, flakiness)

    async def start(self) -> None:
        flaky, dead = self.spec.failing()
        try:
            for endpoint in self.endpoints:
                server = self._server(endpoint, flaky, dead)
                await server.start()
                self.servers[endpoint.index] = server
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _serve_part(spec: FleetSpec, part: int, parts: int, pipe: Connection) -> None:
    """Child process: serve every ``parts``-th endpoint from ``part``, send the ports, serve until told to
    stop (or the parent goes away), then send the :class:`SessionStats`."""
    asyncio.run(_run_part(spec, part, parts, pipe))


async def _run_part(spec: FleetSpec, part: int, parts: int, pipe: Connection) -> None:
    endpoints = [e for e in spec.endpoints() if e.index % parts == part]
    async with SimulatedFleet(spec, endpoints) as fleet:
        pipe.send(fleet.ports)
        with contextlib.suppress(EOFError, OSError):
            await asyncio.to_thread(pipe.recv)
        stats = fleet.stats
    with contextlib.suppress(OSError):
        pipe.send(stats)


@dataclass
class FleetProcesses:
    """The fleet of ``spec`` served by ``processes`` child processes (endpoints dealt round-robin), so
    their CPU is theirs and not the caller's. A context manager; :attr:`ports` once entered."""

    spec: FleetSpec
    processes: int = 1
    start_timeout_s: float = 300.0
    stop_timeout_s: float = 10.0
    ports: dict[int, int] = field(default_factory=dict)
    stats: SessionStats = field(default_factory=SessionStats)
    _children: list[tuple[Any, Connection]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.processes <= 16:
            raise ValueError("a fleet is served by 1 to 16 processes")

    @cached_property
    def endpoints(self) -> list[Endpoint]:
        return self.spec.endpoints()

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self._children]

    def address(self, meter: FleetMeter) -> str:
        return meter_address(meter, self.spec.host, self.ports[meter.endpoint])

    def endpoint_address(self, endpoint: Endpoint) -> str:
        return endpoint.address(self.spec.host, self.ports[endpoint.index])

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        try:
            for part in range(self.processes):
                mine, theirs = context.Pipe()
                process = context.Process(
                    target=_serve_part, args=(self.spec, part, self.processes, theirs), daemon=True,
                    name=f"openami-fleet-{part}",
                )  # fmt: skip
                process.start()
                theirs.close()
                self._children.append((process, mine))
            deadline = time.monotonic() + self.start_timeout_s
            for process, pipe in self._children:
                if not pipe.poll(max(0.0, deadline - time.monotonic())):
                    raise RuntimeError(
                        f"fleet process {process.pid} did not start in {self.start_timeout_s} s"
                    )
                self.ports.update(pipe.recv())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> SessionStats:
        """Stop every child (bounded: killed when it does not end in time); their stats summed."""
        for _, pipe in self._children:
            with contextlib.suppress(OSError):
                pipe.send(_STOP)
        deadline = time.monotonic() + self.stop_timeout_s
        for process, pipe in self._children:
            with contextlib.suppress(OSError, EOFError):
                if pipe.poll(max(0.0, deadline - time.monotonic())):
                    self.stats = self.stats + pipe.recv()
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(5)
            pipe.close()
        self._children.clear()
        return self.stats

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
