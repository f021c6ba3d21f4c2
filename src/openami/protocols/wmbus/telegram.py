"""One wireless M-Bus telegram from bytes to records: link, ELL, AFL, TPL, decryption, application layer.

:func:`decode_telegram` is the entry point a receiver or the CLI calls. It never returns a half-decoded
telegram silently: bytes that do not parse end in :class:`~openami.protocols.wmbus.errors.DecodeError`,
protection it cannot remove in :class:`~openami.protocols.wmbus.errors.SecurityError` (key missing, key
wrong, mode unsupported).

Receivers that hold the keys themselves (many USB sticks, gateways, and the corpora) deliver telegrams
already decrypted but with the security flags left as sent. Such a telegram is recognised by its own
integrity check (mode 5/7: the 2F 2F fillers at the start; ELL: the payload CRC over the plain bytes) and
accepted without a key; ``decrypted`` then stays ``False``. A real ciphertext passes that check by chance
once in 65 536 telegrams, which only ever yields a :class:`DecodeError` from the record decoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from openami.protocols.wmbus import apl, registry
from openami.protocols.wmbus.compact import COMPACT_CIS, FULL_CIS, FormatCache
from openami.protocols.wmbus.errors import (
    DecodeError,
    DecryptionError,
    KeyRequiredError,
    UnsupportedCIError,
    UnsupportedSecurityModeError,
    WmbusError,
)
from openami.protocols.wmbus.link import Address, CrcMode, LinkFrame, crc16_en13757, parse_link
from openami.protocols.wmbus.security import FILLER, decrypt_des, decrypt_ell, decrypt_mode5, decrypt_mode7
from openami.protocols.wmbus.transport import (
    AFL_CI,
    ELL_CIS,
    MANUFACTURER_CIS,
    Afl,
    Ell,
    Tpl,
    parse_afl,
    parse_ell,
    parse_tpl,
)

__all__ = ["WmbusTelegram", "decode_link_frame", "decode_telegram", "decode_telegrams", "to_json"]


@dataclass(frozen=True, slots=True)
class WmbusTelegram:
    """A decoded telegram. ``application_data`` is the plain EN 13757-3 payload the records came from."""

    link: LinkFrame
    ell: Ell | None
    afl: Afl | None
    tpl: Tpl | None
    application_data: bytes
    records: tuple[Any, ...] = ()
    decrypted: bool = False
    manufacturer_data: bytes | None = None
    manufacturer_values: dict[str, int | float | str] = field(default_factory=dict)

    @property
    def address(self) -> Address:
        """The meter: the TPL long-header address when present (radio module in front), else the link's."""
        if self.tpl is not None and self.tpl.address is not None:
            return self.tpl.address
        return self.link.address

    @property
    def access_number(self) -> int:
        if self.tpl is not None and self.tpl.access_number is not None:
            return self.tpl.access_number
        return self.ell.access_number if self.ell is not None else 0

    @property
    def status(self) -> int:
        return self.tpl.status if self.tpl is not None and self.tpl.status is not None else 0

    @property
    def security_mode(self) -> int:
        return self.tpl.security_mode if self.tpl is not None else 0

    @property
    def is_installation(self) -> bool:
        return self.link.is_installation


def _ell_payload(
    body: bytes, pos: int, ell: Ell, link: LinkFrame, key: bytes | None
) -> tuple[Ell, bytes, bool]:
    """Remove ELL protection from ``body[pos:]`` (payload CRC + data); returns the data after the CRC."""
    rest = body[pos:]
    if len(rest) < 2:
        raise DecodeError("ELL payload CRC missing", pos)
    stated = int.from_bytes(rest[:2], "little")
    if crc16_en13757(rest[2:]) == stated:  # plain, or decrypted by the receiver
        return _with_crc(ell, stated), rest[2:], False
    if ell.encryption == 0:
        raise DecodeError("ELL payload CRC mismatch", pos)
    if ell.encryption != 1:
        raise UnsupportedSecurityModeError(ell.encryption)
    if key is None:
        raise KeyRequiredError("ELL payload is encrypted (AES-CTR) and no key was given")
    crc, plain = decrypt_ell(key, link.address, ell.communication_control, ell.session_number or 0, rest)
    return _with_crc(ell, crc), plain, True


def _with_crc(ell: Ell, crc: int) -> Ell:
    return Ell(ell.ci, ell.communication_control, ell.access_number, ell.address2, ell.session_number, crc)


def _tpl_payload(
    body: bytes, tpl_start: int, pos: int, tpl: Tpl, afl: Afl | None, address: Address, key: bytes | None
) -> tuple[bytes, bool]:
    payload = body[pos:]
    mode = tpl.security_mode
    if mode == 0:
        return payload, False
    if mode not in (2, 3, 5, 7):
        raise UnsupportedSecurityModeError(mode)
    if key is None:
        if payload[:2] == FILLER:
            return payload, False
        raise KeyRequiredError(f"payload is encrypted (security mode {mode}) and no key was given")
    try:
        if mode == 5:
            return decrypt_mode5(key, address, tpl.access_number or 0, payload, tpl.encrypted_blocks), True
        if mode in (2, 3):
            return decrypt_des(key, mode, address, payload, tpl.encrypted_blocks), True
        if afl is None or afl.message_counter is None:
            raise DecryptionError("mode 7 needs the message counter of an AFL")
        mac_input = afl.mac_input_prefix + body[tpl_start:]
        plain = decrypt_mode7(
            key,
            afl.message_counter,
            address.id_bytes,
            payload,
            tpl.encrypted_blocks,
            mac=afl.mac,
            mac_input=mac_input,
        )
        return plain, True
    except DecryptionError:
        if payload[:2] == FILLER:  # already decrypted by the receiver; the key was not needed
            return payload, False
        raise


def decode_telegram(
    data: bytes, *, key: bytes | None = None, crc: CrcMode = "auto", formats: FormatCache | None = None
) -> WmbusTelegram:
    """Decode one telegram (link layer on). ``key`` is the meter's AES-128 key when it encrypts.

    ``formats`` is the receiver's memory of full frames: given one, full frames teach it their format and
    compact frames (CI 0x79/0x7B/0x73) are rebuilt from it (:class:`FormatUnknownError` until the meter
    model's full frame has been seen); without one, compact frames are an :class:`UnsupportedCIError`.

    Raises :class:`~openami.protocols.wmbus.errors.WmbusError` subclasses only: ``DecodeError`` (incl.
    ``FrameError``, ``UnsupportedCIError``) for bad or unsupported bytes, ``SecurityError`` (incl.
    ``KeyRequiredError``, ``DecryptionError``, ``UnsupportedSecurityModeError``) for protection problems.
    """
    return decode_link_frame(parse_link(data, crc=crc), key=key, formats=formats)


def decode_link_frame(
    link: LinkFrame, *, key: bytes | None = None, formats: FormatCache | None = None
) -> WmbusTelegram:
    """Decode the layers above a parsed link frame (ELL, AFL, TPL, application). Also the entry for
    bearers that carry the OMS layers without a wM-Bus link layer (OMS over LoRaWAN): the caller builds
    the :class:`LinkFrame` from the meter's registered address, which the IV and key derivation need."""
    body = link.body
    if not body:
        raise DecodeError("telegram has no CI field", 10)
    pos = 0
    decrypted = False
    ell = afl = tpl = None
    if body[pos] in ELL_CIS:
        ell, pos = parse_ell(body, pos)
        if ell.session_number is not None:
            ell, plain, decrypted = _ell_payload(body, pos, ell, link, key)
            body, pos = body[:pos] + plain, pos
    if pos < len(body) and body[pos] == AFL_CI:
        afl, pos = parse_afl(body, pos)
        if afl.more_fragments or afl.fragment_id > 1:
            raise DecodeError("fragmented AFL messages are not reassembled", pos)
    if pos >= len(body):
        return WmbusTelegram(link, ell, afl, None, b"", decrypted=decrypted)
    if body[pos] in MANUFACTURER_CIS:
        raw = body[pos + 1 :]
        return WmbusTelegram(
            link,
            ell,
            afl,
            None,
            b"",
            decrypted=decrypted,
            manufacturer_data=raw,
            manufacturer_values=_manufacturer_values(link.address, raw),
        )
    tpl_start = pos
    tpl, pos = parse_tpl(body, pos)
    address = tpl.address or link.address
    app, tpl_decrypted = _tpl_payload(body, tpl_start, pos, tpl, afl, address, key)
    decrypted = decrypted or tpl_decrypted
    if tpl.ci in COMPACT_CIS:
        if formats is None:
            raise UnsupportedCIError(tpl.ci, tpl_start, "compact frame (no format cache given) at")
        app = formats.expand(tpl.ci, address, app)
    elif tpl.ci not in FULL_CIS:
        return WmbusTelegram(link, ell, afl, tpl, app, decrypted=decrypted, manufacturer_data=app)
    records = apl.decode_records(app)
    if formats is not None and tpl.ci in FULL_CIS:
        formats.learn(address, app)
    return WmbusTelegram(link, ell, afl, tpl, app, records, decrypted)


def decode_telegrams(telegrams: Sequence[bytes], *, key: bytes | None = None) -> list[WmbusTelegram]:
    """Decode telegrams received in this order (one key for all), sharing one :class:`FormatCache` so a
    compact frame after its meter model's full frame decodes. Raises on the first bad telegram, with its
    position (a :class:`WmbusError` whose ``__cause__`` is the telegram's own error)."""
    formats = FormatCache()
    out = []
    for index, data in enumerate(telegrams, 1):
        try:
            out.append(decode_telegram(data, key=key, formats=formats))
        except WmbusError as exc:
            raise WmbusError(f"telegram {index} of {len(telegrams)}: {exc}") from exc
    return out


def _manufacturer_values(address: Address, raw: bytes) -> dict[str, int | float | str]:
    decoder = registry.lookup(address.manufacturer, address.version, address.device_type)
    if decoder is None:
        return {}
    try:
        return dict(decoder(raw))
    except WmbusError:
        return {}


def to_json(telegram: WmbusTelegram) -> dict[str, Any]:
    """``{"header": {...}, "records": [...]}``; record dicts are the M-Bus package's JSON form."""
    address = telegram.address
    return {
        "header": {
            "id": address.id,
            "manufacturer": address.manufacturer,
            "version": address.version,
            "medium": address.medium,
            "access_number": telegram.access_number,
            "status": telegram.status,
        },
        "records": [apl.record_to_json(r) for r in telegram.records],
    }
