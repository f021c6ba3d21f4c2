"""Wireless M-Bus telegrams built in the standards' field order (EN 13757-4/-7, EN 13757-3, OMS Vol. 2).

Why a head-end carries an encoder: the simulated meters, the tests and the benchmark need telegrams that
are laid out the way real meters lay them out, and hand-assembling bytes in each of them would let every
copy drift on its own. The decoder (:func:`~openami.protocols.wmbus.telegram.decode_telegram`) reads back
everything built here, which the tests check, so the pair describes the layout twice and a mistake in
one shows up in the other.

A meter-sent telegram, outermost layer first:

* link layer: L (bytes after it), C (0x44 SND-NR data, 0x46 SND-IR installation), M (manufacturer),
  A (id, version, device type); over the air cut into CRC blocks of frame format A or B
  (:func:`~openami.protocols.wmbus.link.add_crc_format_a` / ``_b``);
* mode 7 only, the AFL (CI 0x90): fragmentation control, message control (CMAC truncated to 8 bytes),
  the 32-bit message counter and the MAC;
* the TPL: CI 0x7A short header (access number, status, configuration word) or 0x72 long header (the
  same preceded by the meter's own address, when a radio module sends for it); mode 7 adds the
  configuration field extension byte (KDF-A, key id 0);
* the application data: EN 13757-3 records (DIB from :func:`openami.protocols.mbus.dif.encode_dib`, VIB,
  data field). Encrypted modes start the plaintext with the ``2F 2F`` check fillers and pad it with
  ``2F`` to whole AES blocks; that is how a receiver tells a right key from a wrong one.

Encryption: mode 5 is AES-128-CBC with the IV made of M, A and eight times the access number (M and A of
the long header when there is one); mode 7 is AES-128-CBC with a zero IV under a key derived per message
from the master key and the message counter (OMS KDF-A), authenticated by the AFL's CMAC over the AFL
fields and every byte from the TPL CI on. Impossible requests (a value too large for its data field, more
than 15 encrypted blocks, a 15-byte key) are :class:`~openami.protocols.wmbus.errors.EncodeError`.

Sans-IO: nothing here reads the clock; dates are passed in.
"""

from __future__ import annotations

import struct
from datetime import date, datetime
from typing import Final, Literal

from openami.protocols.mbus.dif import FIELD_LENGTHS, encode_dib
from openami.protocols.mbus.errors import EncodeError as MbusEncodeError
from openami.protocols.wmbus.errors import EncodeError
from openami.protocols.wmbus.link import (
    C_SND_IR,
    C_SND_NR,
    Address,
    add_crc_format_a,
    add_crc_format_b,
    manufacturer_code,
)
from openami.protocols.wmbus.security import (
    FILLER,
    KEY_LENGTH,
    cmac,
    derive_mode7_keys,
    encrypt_mode5,
    encrypt_mode7,
)
from openami.protocols.wmbus.transport import AFL_CI

__all__ = [
    "CI_TPL_LONG",
    "CI_TPL_SHORT",
    "CW_ACCESSIBLE",
    "CW_BIDIRECTIONAL",
    "CW_SYNCHRONOUS",
    "C_SND_IR",
    "C_SND_NR",
    "DF_BCD2",
    "DF_BCD4",
    "DF_BCD6",
    "DF_BCD8",
    "DF_BCD12",
    "DF_INT8",
    "DF_INT16",
    "DF_INT24",
    "DF_INT32",
    "DF_INT48",
    "DF_INT64",
    "DF_REAL32",
    "MAX_ENCRYPTED_BLOCKS",
    "STATUS_ALARM",
    "STATUS_APPLICATION_BUSY",
    "STATUS_APPLICATION_ERROR",
    "STATUS_PERMANENT_ERROR",
    "STATUS_POWER_LOW",
    "STATUS_TEMPORARY_ERROR",
    "VIB_ERROR_FLAGS",
    "VIF_DATE",
    "VIF_DATE_TIME",
    "VIF_RANGES",
    "FrameFormat",
    "SecurityMode",
    "config_word",
    "date_record",
    "date_time_record",
    "encode_data",
    "encode_link",
    "encode_record",
    "encode_telegram",
    "encode_tpl_header",
    "error_flags_record",
    "make_address",
    "number_record",
    "pad_plaintext",
    "type_f",
    "type_g",
    "vif",
]

SecurityMode = Literal[0, 5, 7]
FrameFormat = Literal["stripped", "A", "B"]

CI_TPL_LONG: Final = 0x72
CI_TPL_SHORT: Final = 0x7A

# Status byte of the TPL (EN 13757-7): bits 0-1 application status, then power low, permanent error,
# temporary error; bits 5-7 are the manufacturer's.
STATUS_APPLICATION_BUSY: Final = 0x01
STATUS_APPLICATION_ERROR: Final = 0x02
STATUS_ALARM: Final = 0x03
"""Application status 11: abnormal condition / alarm (a leak, a burst, a tamper)."""
STATUS_POWER_LOW: Final = 0x04
STATUS_PERMANENT_ERROR: Final = 0x08
STATUS_TEMPORARY_ERROR: Final = 0x10

# Configuration word bits besides the security mode (bits 8-12) and the encrypted block count (4-7).
CW_BIDIRECTIONAL: Final = 0x8000
CW_ACCESSIBLE: Final = 0x4000
CW_SYNCHRONOUS: Final = 0x2000

MAX_ENCRYPTED_BLOCKS: Final = 15
"""Four bits of the configuration word count the encrypted 16-byte blocks."""
_BLOCK: Final = 16
_B_FIRST: Final = 126  # frame format B: bytes (L included) covered by the first CRC
_CFE_KDF_A: Final = 0x10  # configuration field extension: KDF selection 01 (KDF-A), key id 0
# AFL of a mode-7 telegram: FCL says MCL, MCR and MAC are present (fragment 0, no more fragments); MCL
# says authentication type 5 (AES-CMAC truncated to 8 bytes) and that the message counter is present.
_FCL_MODE7: Final = 0x2000 | 0x0800 | 0x0400
_MCL_CMAC8_WITH_COUNTER: Final = 0x20 | 0x05
_MAC8: Final = 8

# Data field codes (DIF bits 0-3).
DF_INT8: Final = 0x1
DF_INT16: Final = 0x2
DF_INT24: Final = 0x3
DF_INT32: Final = 0x4
DF_REAL32: Final = 0x5
DF_INT48: Final = 0x6
DF_INT64: Final = 0x7
DF_BCD2: Final = 0x9
DF_BCD4: Final = 0xA
DF_BCD6: Final = 0xB
DF_BCD8: Final = 0xC
DF_BCD12: Final = 0xE
_INT_FIELDS: Final = frozenset({DF_INT8, DF_INT16, DF_INT24, DF_INT32, DF_INT48, DF_INT64})
_BCD_FIELDS: Final = frozenset({DF_BCD2, DF_BCD4, DF_BCD6, DF_BCD8, DF_BCD12})

#: Primary VIFs of a quantity: (VIF of the lowest exponent, lowest, highest exponent). Exponents are powers
#: of ten of the unit the decoder normalises to (Wh, m3, kg, W, m3/h, °C, K, bar), so ``("volume", -3)``
#: is litres (VIF 0x13) and ``("energy", 3)`` kWh (VIF 0x06), as in EN 13757-3 table 10.
VIF_RANGES: Final[dict[str, tuple[int, int, int]]] = {
    "energy": (0x00, -3, 4),
    "volume": (0x10, -6, 1),
    "mass": (0x18, -3, 4),
    "power": (0x28, -3, 4),
    "volume_flow": (0x38, -6, 1),
    "flow_temperature": (0x58, -3, 0),
    "return_temperature": (0x5C, -3, 0),
    "temperature_difference": (0x60, -3, 0),
    "external_temperature": (0x64, -3, 0),
    "pressure": (0x68, -3, 0),
}
VIF_DATE: Final = 0x6C
"""Date, data type G (2 bytes)."""
VIF_DATE_TIME: Final = 0x6D
"""Date and time, data type F (4 bytes, to the minute)."""
VIB_ERROR_FLAGS: Final = b"\xfd\x17"
"""Error flags (binary, the meaning of each bit is the manufacturer's)."""


def make_address(manufacturer: str, ident: str, version: int, device_type: int) -> Address:
    """The link (or long-header) address of a meter: three letters, the id as printed (8 digits), version
    and device type. The id is sent least significant byte first, as every IV and KDF expects it."""
    if len(ident) != 8 or any(ch not in "0123456789abcdefABCDEF" for ch in ident):
        raise EncodeError(f"a meter id is 8 (BCD) digits: {ident!r}")
    if not (0 <= version <= 0xFF and 0 <= device_type <= 0xFF):
        raise EncodeError("version and device type are single bytes")
    try:
        code = manufacturer_code(manufacturer)
    except ValueError as exc:
        raise EncodeError(str(exc)) from None
    return Address(code, bytes.fromhex(ident)[::-1], version, device_type)


def vif(quantity: str, exponent: int) -> bytes:
    """The primary VIF of ``quantity`` with values in units of ``10**exponent`` of its base unit."""
    if quantity not in VIF_RANGES:
        raise EncodeError(f"no VIF table entry for {quantity!r}; known: {sorted(VIF_RANGES)}")
    base, low, high = VIF_RANGES[quantity]
    if not low <= exponent <= high:
        raise EncodeError(f"{quantity} has VIFs for exponents {low}..{high}, not {exponent}")
    return bytes([base + exponent - low])


def encode_data(value: int | float, data_field: int, *, signed: bool = True) -> bytes:
    """``value`` in the coding of ``data_field``, least significant byte first (EN 13757-3 annex A).

    Integers are two's complement (``signed``) or unsigned; BCD has a top ``F`` nibble for negative values
    (type A); 0x5 is an IEEE 754 single. Values that do not fit are an :class:`EncodeError`, never cut.
    """
    if data_field == DF_REAL32:
        return struct.pack("<f", float(value))
    if not isinstance(value, int):
        raise EncodeError(f"data field {data_field:#x} carries integers, not {value!r}")
    size = FIELD_LENGTHS[data_field] if 0 <= data_field < len(FIELD_LENGTHS) else 0
    if data_field in _INT_FIELDS:
        try:
            return value.to_bytes(size, "little", signed=signed)
        except OverflowError:
            raise EncodeError(f"{value} does not fit data field {data_field:#x} ({size} bytes)") from None
    if data_field in _BCD_FIELDS:
        digits = 2 * size
        text = f"{value:0{digits}d}" if value >= 0 else f"F{-value:0{digits - 1}d}"
        if len(text) != digits:
            raise EncodeError(f"{value} has more digits than BCD data field {data_field:#x} ({digits})")
        return bytes.fromhex(text)[::-1]
    raise EncodeError(f"data field {data_field:#x} carries no value this encoder writes")


def type_f(ts: datetime) -> bytes:
    """Date and time to the minute (data type F), years 2000-2099, as the meter's wall clock shows it.

    The zone is not sent (M-Bus clocks are local time): pass ``ts`` already in the meter's zone. Years past
    2080 set the hundred-years bits, because without them a two-digit 81..99 reads as the 1900s.
    """
    year = ts.year - 2000
    if not 0 <= year <= 99:
        raise EncodeError(f"type F covers 2000-2099 here, not {ts.year}")
    hundreds = 1 if year > 80 else 0
    return bytes(
        [
            ts.minute & 0x3F,
            (ts.hour & 0x1F) | (hundreds << 5),
            (ts.day & 0x1F) | ((year & 0x07) << 5),
            (ts.month & 0x0F) | (((year >> 3) & 0x0F) << 4),
        ]
    )


def type_g(day: date) -> bytes:
    """A calendar date (data type G), years 2000-2080 (the type has no century bits)."""
    year = day.year - 2000
    if not 0 <= year <= 80:
        raise EncodeError(f"type G covers 2000-2080, not {day.year}")
    return bytes([(day.day & 0x1F) | ((year & 0x07) << 5), (day.month & 0x0F) | (((year >> 3) & 0x0F) << 4)])


def encode_record(
    vib: bytes,
    data: bytes,
    data_field: int,
    *,
    function: int = 0,
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
) -> bytes:
    """One data record: DIB (shortest form), VIB, data field. ``data`` must already be coded."""
    length = FIELD_LENGTHS[data_field] if 0 <= data_field < len(FIELD_LENGTHS) else -1
    if length != len(data):
        raise EncodeError(f"data field {data_field:#x} takes {length} bytes, got {len(data)}")
    try:
        dib = encode_dib(data_field, function, storage, tariff, subunit)
    except MbusEncodeError as exc:
        raise EncodeError(str(exc)) from None
    return dib + vib + data


def number_record(
    quantity: str,
    value: int | float,
    *,
    exponent: int,
    data_field: int = DF_INT32,
    function: int = 0,
    storage: int = 0,
    tariff: int = 0,
    subunit: int = 0,
) -> bytes:
    """A numeric record: ``value`` counts units of ``10**exponent`` of the quantity's base unit.

    ``number_record("volume", 12345, exponent=-3)`` is 12345 litres (DIF 04, VIF 13).
    """
    return encode_record(
        vif(quantity, exponent),
        encode_data(value, data_field),
        data_field,
        function=function,
        storage=storage,
        tariff=tariff,
        subunit=subunit,
    )


def date_time_record(ts: datetime, *, storage: int = 0) -> bytes:
    """The meter's clock (or, with ``storage``, the time a stored value was taken): DIF 04, VIF 6D."""
    return encode_record(bytes([VIF_DATE_TIME]), type_f(ts), DF_INT32, storage=storage)


def date_record(day: date, *, storage: int = 0) -> bytes:
    """A date, typically of a stored value (the due date of the last billing period): DIF x2, VIF 6C."""
    return encode_record(bytes([VIF_DATE]), type_g(day), DF_INT16, storage=storage)


def error_flags_record(flags: int, *, data_field: int = DF_INT8) -> bytes:
    """The error flags record (VIF FD 17); each bit's meaning is the manufacturer's."""
    return encode_record(VIB_ERROR_FLAGS, encode_data(flags, data_field, signed=False), data_field)


def config_word(security_mode: int, encrypted_blocks: int = 0, flags: int = 0) -> int:
    """The TPL configuration word: ``flags`` (``CW_*``, content and hop bits) plus mode and block count."""
    if not 0 <= security_mode <= 0x1F:
        raise EncodeError(f"security mode {security_mode} is not a 5-bit value")
    if not 0 <= encrypted_blocks <= MAX_ENCRYPTED_BLOCKS:
        raise EncodeError(f"{encrypted_blocks} encrypted blocks; the field counts up to 15")
    return (flags & 0xE00F) | (security_mode << 8) | (encrypted_blocks << 4)


def encode_tpl_header(
    access_number: int,
    status: int,
    config: int,
    *,
    meter_address: Address | None = None,
    config_extension: int | None = None,
) -> bytes:
    """CI 0x7A short header, or 0x72 long header when ``meter_address`` names the meter behind a module.

    The long header's address is in EN 13757-3 order (id, manufacturer, version, device type), unlike
    the link layer's (manufacturer first).
    """
    if not (0 <= access_number <= 0xFF and 0 <= status <= 0xFF and 0 <= config <= 0xFFFF):
        raise EncodeError("access number and status are bytes, the configuration word 16 bits")
    fields = bytes([access_number, status]) + config.to_bytes(2, "little")
    if config_extension is not None:
        fields += bytes([config_extension & 0xFF])
    if meter_address is None:
        return bytes([CI_TPL_SHORT]) + fields
    long_address = (
        meter_address.id_bytes
        + meter_address.manufacturer_code.to_bytes(2, "little")
        + bytes([meter_address.version, meter_address.device_type])
    )
    return bytes([CI_TPL_LONG]) + long_address + fields


def encode_link(c_field: int, address: Address, body: bytes, frame_format: FrameFormat = "stripped") -> bytes:
    """L C M A and ``body`` (from the CI field on), with the CRCs of ``frame_format`` if asked for."""
    rest = bytes([c_field & 0xFF]) + address.to_bytes() + body
    if len(rest) > 0xFF:
        raise EncodeError(f"a telegram of {len(rest)} bytes after L does not fit the L field")
    frame = bytes([len(rest)]) + rest
    if frame_format == "A":
        return add_crc_format_a(frame)
    if frame_format == "B":
        crcs = 1 if len(frame) <= _B_FIRST else 2
        if len(frame) - 1 + 2 * crcs > 0xFF:
            raise EncodeError("too long for frame format B once its CRCs are counted in L")
        return add_crc_format_b(frame)
    return frame


def pad_plaintext(records: bytes) -> bytes:
    """``2F 2F`` + ``records``, padded with ``2F`` idle fillers to whole AES blocks (OMS modes 5 and 7)."""
    plain = FILLER + records
    return plain + b"\x2f" * (-len(plain) % _BLOCK)


def _check_key(key: bytes | None, mode: int) -> bytes:
    if key is None or len(key) != KEY_LENGTH:
        raise EncodeError(f"security mode {mode} needs a {KEY_LENGTH}-byte AES key")
    return key


def encode_telegram(
    address: Address,
    records: bytes,
    *,
    c_field: int = C_SND_NR,
    access_number: int = 0,
    status: int = 0,
    security_mode: SecurityMode = 0,
    key: bytes | None = None,
    message_counter: int = 0,
    meter_address: Address | None = None,
    config_flags: int = 0,
    plain_tail: bytes = b"",
    frame_format: FrameFormat = "stripped",
) -> bytes:
    """One meter-sent telegram carrying ``records`` (encoded EN 13757-3 records, no fillers).

    ``address`` is the link layer's (the radio's); ``meter_address`` adds a long header naming the meter.
    Mode 0 sends ``records`` as they are; modes 5 and 7 encrypt ``2F 2F`` + records padded to whole
    blocks, then append ``plain_tail`` unencrypted (OMS allows plain records after the encrypted blocks).
    Mode 7 uses ``message_counter`` (the AFL's, which also selects the derived keys). The result has
    the CRCs of ``frame_format`` ("stripped": none, as most receivers print telegrams).
    """
    meter = meter_address or address
    if security_mode == 0:
        config = config_word(0, 0, config_flags)
        header = encode_tpl_header(access_number, status, config, meter_address=meter_address)
        return encode_link(c_field, address, header + records + plain_tail, frame_format)
    if security_mode not in (5, 7):
        raise EncodeError(f"security mode {security_mode} is not built here (0, 5 and 7 are)")
    secret = _check_key(key, security_mode)
    plain = pad_plaintext(records)
    blocks = len(plain) // _BLOCK
    if blocks > MAX_ENCRYPTED_BLOCKS:
        raise EncodeError(f"{len(plain)} bytes to encrypt; the configuration word counts 15 blocks at most")
    config = config_word(security_mode, blocks, config_flags)
    if security_mode == 5:
        header = encode_tpl_header(access_number, status, config, meter_address=meter_address)
        payload = encrypt_mode5(secret, meter, access_number, plain)
        return encode_link(c_field, address, header + payload + plain_tail, frame_format)
    if not 0 <= message_counter <= 0xFFFF_FFFF:
        raise EncodeError("the mode 7 message counter is 32 bits")
    header = encode_tpl_header(
        access_number, status, config, meter_address=meter_address, config_extension=_CFE_KDF_A
    )
    tpl = header + encrypt_mode7(secret, message_counter, meter.id_bytes, plain) + plain_tail
    counter = message_counter.to_bytes(4, "little")
    _, kmac = derive_mode7_keys(secret, message_counter, meter.id_bytes)
    mac = cmac(kmac, bytes([_MCL_CMAC8_WITH_COUNTER]) + counter + tpl)[:_MAC8]
    afl_fields = _FCL_MODE7.to_bytes(2, "little") + bytes([_MCL_CMAC8_WITH_COUNTER]) + counter + mac
    afl = bytes([AFL_CI, len(afl_fields)]) + afl_fields
    return encode_link(c_field, address, afl + tpl, frame_format)
