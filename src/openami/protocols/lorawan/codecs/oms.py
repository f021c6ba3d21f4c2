"""``oms``: OMS meters whose wireless M-Bus layers travel in LoRaWAN frames instead of wM-Bus radio.

The payload is the OMS transport and application layers, from the CI field on: an optional AFL (mode
7), the TPL (CI 0x7A short header, 0x72 long header with the meter's own address, 0x78 none, or their
compact forms) and the EN 13757-3 records, encrypted with the meter's OMS key in security mode 5 or 7
exactly as over the air. LoRaWAN carries no wM-Bus link layer, so the meter's link address (which the
IVs and key derivation need, and under which the key vault files the key) comes from the TPL long header
or, for the other headers, from the device's ``oms_address`` tag (16 hex digits: manufacturer, id,
version, device type as sent); :func:`oms_address` finds it before decoding so the caller can fetch the
key. Decoding is :func:`openami.protocols.wmbus.decode_link_frame`: one implementation for both bearers.
"""

from __future__ import annotations

from openami.protocols.lorawan.codecs import CodecContext, DecodedUplink, register
from openami.protocols.lorawan.codecs.mbus_records import from_records
from openami.protocols.lorawan.errors import CodecError
from openami.protocols.wmbus import Address, WmbusError, decode_link_frame
from openami.protocols.wmbus.link import C_SND_NR, LinkFrame
from openami.protocols.wmbus.transport import AFL_CI, parse_afl, parse_tpl

__all__ = ["ADDRESS_TAG", "decode_oms", "oms_address"]

ADDRESS_TAG = "oms_address"


def oms_address(data: bytes, tags: dict[str, str]) -> Address:
    """The meter's link address: the TPL long header's, else the ``oms_address`` tag's."""
    try:
        pos = parse_afl(data, 0)[1] if data[:1] == bytes((AFL_CI,)) else 0
        tpl, _ = parse_tpl(data, pos)
    except WmbusError as exc:
        raise CodecError(f"OMS payload: {exc}") from exc
    if tpl.address is not None:
        return tpl.address
    raw = tags.get(ADDRESS_TAG, "")
    try:
        return Address.from_bytes(bytes.fromhex(raw))
    except (ValueError, WmbusError):
        raise CodecError(
            f"OMS payload without a long header: the device needs an {ADDRESS_TAG} tag (16 hex digits)"
        ) from None


def decode_oms(f_port: int, data: bytes, context: CodecContext) -> DecodedUplink:
    if not data:
        raise CodecError("empty payload")
    address = oms_address(data, context.tags)
    link = LinkFrame(len(data) + 9, C_SND_NR, address, data, "stripped")
    try:
        telegram = decode_link_frame(link, key=context.key, formats=context.extra.get("formats"))
    except WmbusError as exc:
        raise CodecError(f"OMS payload: {exc}") from exc
    decoded = from_records(telegram.records)
    return DecodedUplink(decoded.values, decoded.events, address.id, decoded.meter_time)


register("oms", decode_oms)
