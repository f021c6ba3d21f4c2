"""``hdlc+serial://`` targets: parsed, accepted by the gateway, and read through DlmsSessions over a real
pty whose master end the DLMS simulator serves in HDLC (:func:`serve_hdlc_fd`)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr

from openami.edge.archive import Archive
from openami.edge.config import MeterKeys
from openami.edge.dlms import ArchiveCounters, client_system_title, dlms_target
from openami.edge.meters import check_address
from openami.hes.dlms_session import DlmsSessions
from openami.hes.dlms_targets import AddressError, DlmsEndpoint, parse_address
from openami.hes.targets import MeterRow
from openami.simulator.dlms_meter import IMPORT_ENERGY, SimulatedMeter
from tests.drivers.dlms.test_hdlc_sessions import CLIENT_SERIAL_ADDRESS, serial_meter  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(30)

PHYSICAL = CLIENT_SERIAL_ADDRESS  # the pty meter's physical address (not the default 16), four bytes


# --- parse_address -------------------------------------------------------------------------------


def test_serial_address_with_defaults_and_options() -> None:
    assert parse_address("hdlc+serial:///dev/ttyUSB0") == DlmsEndpoint(
        "hdlc", "/dev/ttyUSB0", 0, via="serial", baudrate=9600
    )
    endpoint = parse_address(
        "hdlc+serial:///dev/serial/by-id/rs485%20a?baud=19200&physical=17&server=1&auth=lls"
    )
    assert (endpoint.host, endpoint.port, endpoint.baudrate) == ("/dev/serial/by-id/rs485 a", 0, 19200)
    assert (endpoint.framing, endpoint.via, endpoint.physical_address, endpoint.auth) == (
        "hdlc",
        "serial",
        17,
        "lls",
    )
    assert parse_address("hdlc+tcp://h:1").baudrate == 9600  # not used off a serial line


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("hdlc+serial://", "absolute tty path"),
        ("hdlc+serial:///", "absolute tty path"),
        ("hdlc+serial://dev/ttyUSB0", "absolute tty path"),  # two slashes: "dev" read as a host
        ("hdlc+serial:///dev/ttyUSB0?baud=12345", "baud='12345' is not a serial baud rate"),
        ("hdlc+serial:///dev/ttyUSB0?baud=fast", "baud='fast' is not a serial baud rate"),
        ("hdlc+serial:///dev/ttyUSB0?baud=-9600", "baud='-9600' is not a serial baud rate"),
        ("hdlc+serial:///dev/ttyUSB0?physical=99999", "physical=99999 is outside"),
        ("serial:///dev/ttyUSB0", "scheme must be one of .*hdlc\\+serial"),
    ],
)
def test_bad_serial_addresses_say_why(address: str, reason: str) -> None:
    with pytest.raises(AddressError, match=reason):
        parse_address(address)


def test_gateway_accepts_serial_dlms_meters_and_refuses_bad_ones() -> None:
    check_address("dlms", "hdlc+serial:///dev/ttyUSB0?baud=9600&physical=17")
    with pytest.raises(AddressError, match="baud"):
        check_address("dlms", "hdlc+serial:///dev/ttyUSB0?baud=7")


# --- sessions over a pty -------------------------------------------------------------------------


async def test_gateway_reads_a_serial_meter_through_its_sessions(
    serial_meter: tuple[SimulatedMeter, str],  # noqa: F811  (the imported fixture)
    tmp_path: Path,
) -> None:
    """The gateway's own path: a configured meter becomes a target, DlmsSessions dials the tty."""
    meter, path = serial_meter
    keys = MeterKeys(
        encryption=SecretStr(meter.keys.encryption_key.hex()),
        authentication=SecretStr(meter.keys.authentication_key.hex()),
    )
    row = MeterRow(0, "acme", 1, meter.serial, "", f"hdlc+serial://{path}?baud=9600&physical={PHYSICAL}")
    target = dlms_target(row, keys)
    assert (target.endpoint.via, target.endpoint.auth) == ("serial", "hls")
    archive = Archive(tmp_path / "archive.db")
    sessions = DlmsSessions(None, client_system_title("gw-1"), 5, counters=ArchiveCounters(archive))

    async with sessions.open(target) as client:
        assert client.host == path
        assert abs(await client.get_clock() - datetime.now(UTC)) < timedelta(seconds=5)
        value, scaler, unit = await client.read_register(IMPORT_ENERGY)
    assert (scaler, unit) == (0, 30)
    assert isinstance(value, int) and value > 0

    # Two sessions on one bus at once take turns on the line rather than interleave their frames.
    async def clock() -> datetime:
        async with sessions.open(target) as client:
            return await client.get_clock()

    try:
        first, second = await asyncio.gather(clock(), clock())
    finally:
        archive.close()
    assert abs(second - first) < timedelta(seconds=5)
