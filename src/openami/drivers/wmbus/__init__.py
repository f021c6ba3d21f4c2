"""Wireless M-Bus push driver: receivers (USB sticks on a tty or behind ser2net) read line by line.

Telegrams are decoded by :mod:`openami.protocols.wmbus`; decryption needs the key vault and therefore
happens in the head-end (:mod:`openami.hes.wmbus_ingest`), not here.
"""

from openami.drivers.mqtt_json.spec import DriverSpec
from openami.drivers.wmbus.errors import WmbusDriverError, WmbusReceiverUnreachable, WmbusReceiverUrlError
from openami.drivers.wmbus.receiver import (
    ReceivedLine,
    ReceiverEndpoint,
    ReceiverStats,
    WmbusReceiver,
    parse_receiver_url,
)

DRIVER_SPEC = DriverSpec(
    name="wmbus",
    transports=("serial", "tcp", "mqtt"),
    push=True,
    pull=False,
    description="Receivers print one telegram per line (tty or ser2net TCP); gateways forward the same "
    "lines on {prefix}/{tenant}/gw/{gateway}/wmbus.",
)

__all__ = [
    "DRIVER_SPEC",
    "ReceivedLine",
    "ReceiverEndpoint",
    "ReceiverStats",
    "WmbusDriverError",
    "WmbusReceiver",
    "WmbusReceiverUnreachable",
    "WmbusReceiverUrlError",
    "parse_receiver_url",
]
