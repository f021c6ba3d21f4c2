"""``openami simulate``: simulated meters speaking the real protocols on loopback, until Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer

from openami.cli.base import (
    CliError,
    _run,
    console,
    simulate_app,
)
from openami.transports.ports import probe_port


class DlmsFramingOption(StrEnum):
    wrapper = "wrapper"
    hdlc = "hdlc"


@simulate_app.command("dlms")
def simulate_dlms(
    meters: Annotated[int, typer.Option(min=1, max=20_000)] = 10,
    base_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Meter i listens on base-port + i.")
    ] = 14059,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    framing: Annotated[
        DlmsFramingOption,
        typer.Option(help="IEC 62056-47 wrapper, or HDLC (meter i at upper address 1, lower 16 + i)."),
    ] = DlmsFramingOption.wrapper,
) -> None:
    """Serve simulated DLMS meters over TCP until Ctrl-C; keys are the public demo keys."""

    def go() -> None:
        from openami.simulator.dlms_server import run_simulator

        def ready(simulator: Any) -> None:
            first, last = simulator.ports[0], simulator.ports[-1]
            where = "wrapper" if framing == DlmsFramingOption.wrapper else "HDLC, addresses 1/16.."
            console.print(
                f"{meters} DLMS meters on {host}:{first}..{last} ({where}; "
                "client 1 HLS-GMAC, client 16 public)"
            )

        asyncio.run(run_simulator(meters, base_port, host=host, framing=framing.value, on_ready=ready))

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


class P1VersionOption(StrEnum):
    v5 = "5"
    v4 = "4"
    v2_2 = "2.2"


def _print_push_ports(what: str, servers: list[Any], meters: list[Any], interval_s: float) -> None:
    first, last = servers[0].port, servers[-1].port
    where = f"{servers[0].host}:{first}" + (f"..{last}" if len(servers) > 1 else "")
    console.print(f"{what} on {where}, one frame every {interval_s:g} s (Ctrl-C stops)")
    if len(servers) > 1 and last - first != len(servers) - 1:  # ephemeral ports: list them
        for server, meter in zip(servers, meters, strict=True):
            console.print(f"  {server.host}:{server.port}  seed {meter.seed}")


@simulate_app.command("p1")
def simulate_p1(
    meters: Annotated[int, typer.Option(min=1, max=10_000, help="Meter i listens on port + i.")] = 1,
    port: Annotated[int, typer.Option(min=0, max=65535, help="First TCP port; 0: ephemeral ports.")] = 18088,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    version: Annotated[
        P1VersionOption, typer.Option(help="DSMR version of the telegrams.")
    ] = P1VersionOption.v5,
    interval: Annotated[
        float | None, typer.Option(min=0.05, help="Seconds between telegrams [default: 1 for v5, 10 before].")
    ] = None,
    encryption_key: Annotated[
        str | None, typer.Option(help="Encrypt as E-MeterP1 (Luxembourg/Austria): EK, 32 hex digits.")
    ] = None,
    authentication_key: Annotated[str | None, typer.Option(help="AK for E-MeterP1, 32 hex digits.")] = None,
) -> None:
    """Serve simulated DSMR P1 ports over TCP (as ser2net or a P1 dongle would) until Ctrl-C."""

    def go() -> None:
        from openami.protocols.dsmr import P1Keys
        from openami.simulator.p1_meter import build_p1_meters
        from openami.simulator.push_port import serve_push_meters

        keys = None
        if encryption_key is not None or authentication_key is not None:
            if encryption_key is None or authentication_key is None:
                raise CliError("E-MeterP1 needs both --encryption-key and --authentication-key", 2)
            keys = P1Keys(bytes.fromhex(encryption_key), bytes.fromhex(authentication_key))
        sims = build_p1_meters(meters, version=version.value, interval_s=interval, keys=keys)
        what = f"{meters} DSMR {version.value} P1 meter(s)" + (" (encrypted)" if keys else "")
        asyncio.run(
            serve_push_meters(
                sims,
                host=host,
                base_port=port,
                on_ready=lambda servers: _print_push_ports(what, servers, sims, sims[0].interval_s),
            )
        )

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


@simulate_app.command("sml")
def simulate_sml(
    meters: Annotated[int, typer.Option(min=1, max=10_000, help="Meter i listens on port + i.")] = 1,
    port: Annotated[int, typer.Option(min=0, max=65535, help="First TCP port; 0: ephemeral ports.")] = 18188,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between SML files.")] = 1.0,
) -> None:
    """Serve simulated eHZ meters' SML interfaces over TCP (as an optical-head bridge would) until Ctrl-C."""

    def go() -> None:
        from openami.simulator.push_port import serve_push_meters
        from openami.simulator.sml_meter import build_sml_meters

        sims = build_sml_meters(meters, interval_s=interval)
        asyncio.run(
            serve_push_meters(
                sims,
                host=host,
                base_port=port,
                on_ready=lambda servers: _print_push_ports(f"{meters} SML meter(s)", servers, sims, interval),
            )
        )

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


async def _serve_forever(server: Any, describe: Callable[[Any], list[str]]) -> None:
    """Enter ``server`` (an async context manager that binds on enter), print what it serves, wait."""
    async with server as running:
        for line in describe(running):
            console.print(line)
        await asyncio.Event().wait()


def _serve(server: Callable[[], Any], describe: Callable[[Any], list[str]]) -> None:
    def go() -> None:
        asyncio.run(_serve_forever(server(), describe))

    with contextlib.suppress(KeyboardInterrupt):
        _run(go)


PortOption = Annotated[int, typer.Option(min=0, max=65535, help="TCP port; 0: an ephemeral port.")]
HostOption = Annotated[str, typer.Option()]


@simulate_app.command("mbus")
def simulate_mbus(
    meters: Annotated[int, typer.Option(min=1, max=250, help="Meters on the bus, primary 1..N.")] = 3,
    port: PortOption = 10001,
    host: HostOption = "127.0.0.1",
) -> None:
    """Serve a wired M-Bus (heat and water meters) behind a simulated M-Bus-to-TCP converter."""
    from openami.simulator.mbus_meter import MbusBusSimulator, heat_meter, water_meter

    bus = [
        heat_meter(n, f"{10_000_000 + n}") if n % 2 else water_meter(n, f"{10_000_000 + n}", 1000 * n)
        for n in range(1, meters + 1)
    ]

    def describe(sim: Any) -> list[str]:
        return [f"M-Bus converter on {host}:{sim.port} (Ctrl-C stops)"] + [
            f"  primary {m.primary:3d}  secondary {m.id}  {m.manufacturer}" for m in sim.meters
        ]

    probe_port(host, port, "--port")
    _serve(lambda: MbusBusSimulator(bus, host, port), describe)


@simulate_app.command("iec62056-21")
def simulate_iec(
    meters: Annotated[int, typer.Option(min=1, max=32, help="Meters on the RS-485 line.")] = 1,
    port: PortOption = 10002,
    host: HostOption = "127.0.0.1",
) -> None:
    """Serve IEC 62056-21 meters on one line behind a simulated RS-485-to-TCP converter (mode C); with
    several meters, each answers only its own address (its serial)."""
    from openami.simulator.iec62056_21_meter import IecMeterServer, SimulatedIecMeter

    serials = [f"{71_000_000 + n}" for n in range(1, meters + 1)]
    line = [SimulatedIecMeter(s, address=s if meters > 1 else "", seed=n) for n, s in enumerate(serials)]

    def describe(sim: Any) -> list[str]:
        where = f"IEC 62056-21 converter on {host}:{sim.port} (Ctrl-C stops)"
        return [where] + [f"  serial and address {s}" for s in serials]

    probe_port(host, port, "--port")
    _serve(lambda: IecMeterServer(line, host, port), describe)


@simulate_app.command("modbus")
def simulate_modbus(
    meters: Annotated[int, typer.Option(min=1, max=247, help="Devices 1..N behind the gateway.")] = 2,
    port: PortOption = 10502,
    host: HostOption = "127.0.0.1",
) -> None:
    """Serve Modbus TCP devices (odd ids: Eastron SDM630, even ids: heat meters) behind one gateway."""
    from openami.drivers.modbus.models import HEAT, SDM630
    from openami.simulator.modbus_meter import ModbusSimulator, consumption_meter

    devices = {n: consumption_meter(SDM630 if n % 2 else HEAT, n) for n in range(1, meters + 1)}

    def describe(sim: Any) -> list[str]:
        return [f"Modbus TCP gateway on {host}:{sim.port} (Ctrl-C stops)"] + [
            f"  unit {n:3d}  {d.register_map.model}" for n, d in sorted(devices.items())
        ]

    _serve(lambda: ModbusSimulator(host, port, devices), describe)


@simulate_app.command("modem")
def simulate_modem(
    port: PortOption = 10007,
    host: HostOption = "127.0.0.1",
    rssi: Annotated[
        int, typer.Option(min=0, max=99, help="AT+CSQ rssi: 0..31 (-113 + 2 rssi dBm), 99: no network.")
    ] = 20,
    rsrp: Annotated[
        int | None, typer.Option(min=0, max=97, help="LTE RSRP for AT+CESQ (-141 + n dBm); unset: no LTE.")
    ] = None,
    rsrq: Annotated[int | None, typer.Option(min=0, max=34, help="LTE RSRQ (-20 + n / 2 dB).")] = None,
) -> None:
    """Serve a cellular modem's AT port (AT+CSQ, AT+CESQ) behind a simulated serial-to-TCP server."""
    from openami.simulator.at_modem import AtModemSimulator, ModemState

    def describe(sim: Any) -> list[str]:
        lte = f", LTE RSRP {rsrp} RSRQ {rsrq}" if rsrp is not None else ", no LTE"
        return [f"modem AT port on {sim.url}: CSQ rssi {rssi}{lte} (Ctrl-C stops)"]

    probe_port(host, port, "--port")
    _serve(lambda: AtModemSimulator(ModemState(rssi=rssi, rsrp=rsrp, rsrq=rsrq), host, port), describe)


def _aes_key(key: str | None) -> bytes | None:
    """``--key``: 32 hex digits, or nothing (a CliError, not a traceback, for anything else)."""
    if not key:
        return None
    try:
        secret = bytes.fromhex(key)
    except ValueError:
        raise CliError("--key is not hex", 2) from None
    if len(secret) != 16:
        raise CliError("--key is 16 bytes (32 hex digits)", 2)
    return secret


@simulate_app.command("wmbus")
def simulate_wmbus(
    meters: Annotated[int, typer.Option(min=1, max=1000, help="Meters the receiver hears.")] = 3,
    port: PortOption = 10003,
    host: HostOption = "127.0.0.1",
    key: Annotated[
        str | None, typer.Option(help="Every meter's AES key (32 hex digits); without one: plain telegrams.")
    ] = None,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between a meter's telegrams.")] = 12.0,
) -> None:
    """Serve a wireless M-Bus receiver stick (hex lines over TCP, as ser2net exposes one) hearing OMS
    water and heat meters (security mode 5 with --key)."""
    from openami.simulator.wmbus_meter import SimulatedReceiver, SimulatedWmbusMeter

    secret = _run(lambda: _aes_key(key))
    radios = [
        SimulatedWmbusMeter(
            f"{30_000_000 + n}", "water" if n % 2 else "heat", key=secret, interval_s=interval,
            jitter_s=interval / 4,
        )
        for n in range(1, meters + 1)
    ]  # fmt: skip

    class _Stick:
        def __init__(self) -> None:
            self.receiver = SimulatedReceiver(radios)
            self.port = 0

        async def __aenter__(self) -> _Stick:
            await self.receiver.start()
            self.port = await self.receiver.serve_tcp(host, port)
            return self

        async def __aexit__(self, *exc: object) -> None:
            await self.receiver.stop()

    def describe(stick: Any) -> list[str]:
        mode = "mode 5" if secret else "unencrypted"
        return [f"wM-Bus receiver on {host}:{stick.port}, {mode} (Ctrl-C stops)"] + [
            f"  id {m.ident}  link address {m.link_address.hex().upper()}  {m.medium}" for m in radios
        ]

    probe_port(host, port, "--port")
    _serve(_Stick, describe)
