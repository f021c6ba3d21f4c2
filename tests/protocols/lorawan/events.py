"""ChirpStack v4 integration events as its MQTT integration publishes them (JSON form of integration.proto),
for the tests: the real wire shape, built here rather than captured."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

APPLICATION = "9a5d3a0e-4b1e-4c3a-8f59-2a0c9b8e1f00"


def device_info(dev_eui: str, profile: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
        "tenantName": "ChirpStack",
        "applicationId": APPLICATION,
        "applicationName": "meters",
        "deviceProfileId": "0b4b6a3c-0a4f-4f2e-b1a4-6b2f3c9d1e22",
        "deviceProfileName": profile,
        "deviceName": f"meter-{dev_eui[-4:]}",
        "devEui": dev_eui,
        "tags": tags or {},
    }


def uplink(
    dev_eui: str,
    profile: str,
    data: bytes,
    *,
    f_cnt: int,
    time: datetime,
    f_port: int = 2,
    tags: dict[str, str] | None = None,
) -> tuple[str, bytes]:
    doc = {
        "deduplicationId": f"3c2a1b7e-0000-4000-8000-{f_cnt:012d}",
        "time": time.isoformat().replace("+00:00", "Z"),
        "deviceInfo": device_info(dev_eui, profile, tags),
        "devAddr": "01e2f3a4",
        "adr": True,
        "dr": 5,
        "fCnt": f_cnt,
        "fPort": f_port,
        "confirmed": False,
        "data": base64.b64encode(data).decode(),
        "rxInfo": [
            {"gatewayId": "0016c001ff10a235", "uplinkId": 4091, "rssi": -97, "snr": 4.5, "context": "AAAA"},
            {"gatewayId": "0016c001ff10a236", "uplinkId": 4092, "rssi": -88, "snr": 7.25, "context": "AAAB"},
        ],
        "txInfo": {
            "frequency": 868100000,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7}},
        },
    }
    return f"application/{APPLICATION}/device/{dev_eui}/event/up", json.dumps(doc).encode()


def status(
    dev_eui: str, profile: str, *, battery: float | None, margin: int, time: datetime
) -> tuple[str, bytes]:
    doc = {
        "deduplicationId": "3c2a1b7e-0000-4000-8000-999999999999",
        "time": time.isoformat().replace("+00:00", "Z"),
        "deviceInfo": device_info(dev_eui, profile),
        "margin": margin,
        "externalPowerSource": False,
        "batteryLevelUnavailable": battery is None,
        "batteryLevel": battery or 0.0,
    }
    return f"application/{APPLICATION}/device/{dev_eui}/event/status", json.dumps(doc).encode()


def join(dev_eui: str, profile: str, *, time: datetime) -> tuple[str, bytes]:
    doc = {"deduplicationId": "x", "time": time.isoformat(), "deviceInfo": device_info(dev_eui, profile),
           "devAddr": "01e2f3a4"}  # fmt: skip
    return f"application/{APPLICATION}/device/{dev_eui}/event/join", json.dumps(doc).encode()
