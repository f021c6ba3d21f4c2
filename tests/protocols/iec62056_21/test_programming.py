"""Programming-mode frames byte for byte: the BCC is the XOR of everything after SOH through ETX."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest

from openami.protocols.iec62056_21.errors import BccError, DecodeError, EncodeError
from openami.protocols.iec62056_21.programming import (
    BREAK,
    Command,
    Reply,
    clock_writes,
    encode_command,
    encode_password,
    encode_write,
    parse_command,
    parse_reply,
)


def test_break_password_and_writes_are_byte_exact() -> None:
    # B0 ETX: 0x42 ^ 0x30 ^ 0x03 = 0x71
    assert BREAK == b"\x01B0\x03\x71"
    # P1 STX (00000000) ETX: 'P'^'1'^STX^'('^')'^ETX (the eight '0' cancel out) = 0x61
    assert encode_password("00000000") == b"\x01P1\x02(00000000)\x03\x61"
    time_write, date_write = clock_writes(datetime(2026, 12, 2, 14, 5, 9))
    assert time_write == b"\x01W1\x020.9.1(140509)\x03" + bytes([_xor(b"W1\x020.9.1(140509)\x03")])
    assert date_write == b"\x01W1\x020.9.2(261202)\x03" + bytes([_xor(b"W1\x020.9.2(261202)\x03")])
    assert encode_write("0.9.1", "000000", "5")[1:3] == b"W5"


def _xor(data: bytes) -> int:
    value = 0
    for byte in data:
        value ^= byte
    return value


def test_commands_round_trip_and_bad_bcc_is_refused() -> None:
    for command in (Command("P", "0", "(71234567)"), Command("B", "0"), Command("W", "1", "0.9.1(010203)")):
        assert parse_command(encode_command(command)) == command
    frame = bytearray(encode_password("secret"))
    frame[-1] ^= 0x01
    with pytest.raises(BccError):
        parse_command(bytes(frame))
    with pytest.raises(DecodeError):
        parse_command(b"\x01X1\x03" + bytes([_xor(b"X1\x03")]))


BAD_INPUT: list[Callable[[], bytes]] = [
    lambda: encode_password("a)b"),
    lambda: encode_write("0.9.1", "12\r\n"),
    lambda: encode_command(Command("Q", "1")),
    lambda: encode_command(Command("W", "x")),
]


@pytest.mark.parametrize("build", BAD_INPUT)
def test_bad_input_is_an_encode_error(build: Callable[[], bytes]) -> None:
    with pytest.raises(EncodeError):
        build()


def test_replies() -> None:
    assert parse_reply(b"\x06rest") == (Reply("ack"), 1)
    assert parse_reply(b"\x15") == (Reply("nak"), 1)
    assert parse_reply(b"\x02(ERROR)\x03") is None  # BCC still on the way
    error = b"\x02(ERROR)\x03" + bytes([_xor(b"(ERROR)\x03")])
    assert parse_reply(error) == (Reply("error", "ERROR"), len(error))
    operand = encode_command(Command("P", "0", "(1234)"))
    reply, end = parse_reply(operand + b"\x06") or (None, 0)
    assert reply == Reply("operand", "(1234)", Command("P", "0", "(1234)")) and end == len(operand)
    with pytest.raises(DecodeError):
        parse_reply(b"garbage")
