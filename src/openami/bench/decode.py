"""``openami bench decode``: how many telegrams per second the M-Bus and wireless M-Bus decoders take.

The telegrams are built here from the standards' field order (so the bench needs no corpus): a wired
RSP_UD of a heat meter with the records such meters send (energy, volume, flow, temperatures, power, a
date-time, a previous-period value and a manufacturer block), and the same records as a wireless OMS
telegram, plain and encrypted with security mode 5. Each is decoded ``count`` times; the figure is the
decoder's own cost (frame checks, decryption, record walk, unit normalisation), single-threaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from openami.protocols.mbus.frames import C_RSP_UD, FrameKind, MbusFrame, encode_frame
from openami.protocols.mbus.telegram import decode_frame
from openami.protocols.wmbus.encode import encode_telegram, pad_plaintext
from openami.protocols.wmbus.link import Address, manufacturer_code
from openami.protocols.wmbus.telegram import decode_telegram

__all__ = ["run_decode_bench"]

_KEY: Final = bytes(range(16))
_ID: Final = bytes.fromhex("78563412")  # 12345678, little-endian BCD as sent
_RECORDS: Final = bytes.fromhex(
    "0C0612345600"  # energy, 8-digit BCD, kWh
    "0C1378563412"  # volume, 8-digit BCD, litres
    "0B3B450100"  # volume flow, 6-digit BCD, l/h
    "0A5A5207"  # flow temperature, 4-digit BCD, 0.1 °C
    "0A5E1104"  # return temperature
    "0B2D670500"  # power, 6-digit BCD, 0.1 kW
    "046D2B0A7C2B"  # date-time (type F)
    "4C0600340000"  # energy at the end of the previous period (storage 1)
    "426CBF2A"  # its date (type G)
)


def _wired() -> bytes:
    header = _ID + manufacturer_code("OAM").to_bytes(2, "little") + bytes((0x01, 0x04, 0x2A, 0x00, 0, 0))
    frame = MbusFrame(FrameKind.LONG, C_RSP_UD, 1, 0x72, header + _RECORDS + bytes.fromhex("0F0102"))
    return encode_frame(frame)


def _wireless(encrypted: bool) -> bytes:
    address = Address(manufacturer_code("OAM"), _ID, 0x01, 0x04)
    if encrypted:
        return encode_telegram(
            address, _RECORDS, access_number=0x2A, security_mode=5, key=_KEY, frame_format="A"
        )
    # The plain form keeps the 2F 2F fillers, as meters that could encrypt but do not still send them.
    return encode_telegram(address, pad_plaintext(_RECORDS), access_number=0x2A, frame_format="A")


def _rate(decode: Callable[[], object], count: int) -> dict[str, Any]:
    decode()  # the first call pays for imports and caches
    started = time.perf_counter()
    for _ in range(count):
        decode()
    seconds = time.perf_counter() - started
    return {"telegrams": count, "seconds": round(seconds, 3), "telegrams_per_s": round(count / seconds, 1)}


def run_decode_bench(count: int = 20_000) -> dict[str, Any]:
    """Decode each kind of telegram ``count`` times; telegrams per second per decoder."""
    wired, plain, secret = _wired(), _wireless(encrypted=False), _wireless(encrypted=True)
    return {
        "mbus": _rate(lambda: decode_frame(wired), count),
        "wmbus": _rate(lambda: decode_telegram(plain), count),
        "wmbus_mode5": _rate(lambda: decode_telegram(secret, key=_KEY), count),
    }
