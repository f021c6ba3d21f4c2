"""Request, identification, option select and data message framing, with the published BCCs."""

from __future__ import annotations

import pytest

from openami.protocols.iec62056_21.errors import BccError, DecodeError, EncodeError
from openami.protocols.iec62056_21.messages import (
    MODE_B_BAUDRATES,
    MODE_C_BAUDRATES,
    SERIAL_FRAMING,
    Identification,
    OptionSelect,
    bcc,
    encode_data_message,
    encode_identification,
    encode_option_select,
    encode_request,
    mode_c_char,
    parse_identification,
    parse_option_select,
    parse_request,
    split_data_message,
)
from tests.protocols.iec62056_21.examples import EMH_ACK, EMH_DATA, EMH_IDENTIFICATION, EMH_PROGRAMMING_BCC


@pytest.mark.parametrize(("message", "printed"), EMH_PROGRAMMING_BCC)
def test_bcc_matches_published_examples(message: bytes, printed: str) -> None:
    assert bcc(message) == ord(printed)


def test_bcc_of_published_data_message() -> None:
    assert EMH_DATA[-1:] == b"+"
    block, after = split_data_message(EMH_DATA)
    assert after == len(EMH_DATA)
    assert block.startswith(b"1-0:1.8.0*255(") and block.endswith(b"!\r\n")
    assert encode_data_message(block.decode("ascii")) == EMH_DATA


def test_bcc_mismatch_and_truncation() -> None:
    broken = EMH_DATA[:-1] + b"*"
    with pytest.raises(BccError) as info:
        split_data_message(broken)
    assert (info.value.expected, info.value.received) == (ord("+"), ord("*"))
    assert split_data_message(broken, check_bcc=False)[0] == split_data_message(EMH_DATA)[0]
    with pytest.raises(DecodeError, match="no BCC"):
        split_data_message(EMH_DATA[:-1])
    with pytest.raises(DecodeError, match="no ETX"):
        split_data_message(EMH_DATA[:-2])
    with pytest.raises(DecodeError, match="STX"):
        split_data_message(EMH_DATA[1:])


def test_request_messages() -> None:
    assert encode_request() == b"/?!\r\n"
    assert encode_request("12345678") == b"/?12345678!\r\n"
    assert parse_request(b"/?12345678!\r\n") == "12345678"
    with pytest.raises(EncodeError):
        encode_request("bad/addr")
    with pytest.raises(EncodeError):
        encode_request("1" * 33)
    with pytest.raises(DecodeError):
        parse_request(b"/?12!")


def test_identification_published_examples() -> None:
    emh = parse_identification(EMH_IDENTIFICATION)
    assert emh == Identification("EMH", "5", "D4EM4TIIW001--", "@")
    assert (emh.mode, emh.baudrate, emh.fast_reaction) == ("C", 9600, False)
    assert encode_identification(emh) == EMH_IDENTIFICATION
    zmd = parse_identification(b"/LGZ5\\2ZMD4054459.B40")
    assert (zmd.manufacturer, zmd.enhanced, zmd.ident, zmd.text) == (
        "LGZ",
        "2",
        "ZMD4054459.B40",
        "LGZ5\\2ZMD4054459.B40",
    )


@pytest.mark.parametrize(
    ("line", "mode", "rate"),
    [
        (b"/ISk5ME382-1000\r\n", "C", 9600),
        (b"/ABC0X\r\n", "C", 300),
        (b"/ABC6X\r\n", "C", 19200),
        (b"/ABCAX\r\n", "B", 600),
        (b"/ABCFX\r\n", "B", 19200),
        (b"/ABCZX\r\n", "A", 300),
        (b"/ABC7X\r\n", "C", None),
        (b"/ABCGX\r\n", "B", None),
    ],
)
def test_identification_modes(line: bytes, mode: str, rate: int | None) -> None:
    ident = parse_identification(line)
    assert (ident.mode, ident.baudrate) == (mode, rate)


@pytest.mark.parametrize(
    "line", [b"/AB5X\r\n", b"ISK5ME382\r\n", b"/IS15X\r\n", b"/ISK5a/b\r\n", b"/ISK5a!\r\n"]
)
def test_identification_malformed(line: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_identification(line)


def test_baud_rate_tables() -> None:
    assert list(MODE_C_BAUDRATES.values()) == [300, 600, 1200, 2400, 4800, 9600, 19200]
    assert list(MODE_B_BAUDRATES) == ["A", "B", "C", "D", "E", "F"]
    assert mode_c_char(9600) == "5"
    with pytest.raises(EncodeError):
        mode_c_char(115200)
    assert SERIAL_FRAMING == "7E1"


def test_option_select_published_example() -> None:
    option = parse_option_select(EMH_ACK)
    assert option == OptionSelect("5", "0", "0")
    assert option.baudrate == 9600
    assert encode_option_select(option) == EMH_ACK
    assert encode_option_select(OptionSelect("5", mode="1")) == b"\x06051\r\n"
    with pytest.raises(DecodeError):
        parse_option_select(b"\x06050")
    with pytest.raises(EncodeError):
        encode_option_select(OptionSelect("55"))


def test_data_message_refuses_control_characters() -> None:
    with pytest.raises(EncodeError):
        encode_data_message("1.8.0(1\x03)\r\n!\r\n")
    with pytest.raises(EncodeError):
        encode_data_message("1.8.0(1°)\r\n!\r\n")
