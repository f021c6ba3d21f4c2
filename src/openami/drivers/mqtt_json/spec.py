"""What the driver registry needs to know about the JSON-over-MQTT gateway driver."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DriverSpec:
    """A driver's static description: how it reaches meters and who starts the conversation.

    ``push`` drivers receive data the device sends on its own (a listener runs for them); ``pull``
    drivers are scheduled to read meters.
    """

    name: str
    transports: tuple[str, ...]
    push: bool
    pull: bool
    description: str = ""


DRIVER_SPEC = DriverSpec(
    name="mqtt-json",
    transports=("mqtt",),
    push=True,
    pull=False,
    description="Gateways push JSON uplinks (v1, optionally gzip) to {prefix}/{tenant}/gw/{gateway}/up.",
)
