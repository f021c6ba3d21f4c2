"""xDLMS push APDUs: the three date-time forms meters send, event notifications, and bounded failure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.protocols.dlms.apdu import DataNotification, EventNotification, decode_apdu
from openami.protocols.dlms.axdr import Data, encode_data
from openami.protocols.dlms.errors import DecodeError
from openami.protocols.dlms.obis import Obis

DT12 = bytes.fromhex("07e40119060e000aff800000")  # 2020-01-25 14:00:10, deviation unknown
BODY = encode_data(Data.structure(Data.uint32(42)))


@pytest.mark.parametrize(
    "date_field", [b"\x0c" + DT12, b"\x09\x0c" + DT12], ids=["length-prefixed", "tagged"]
)
def test_apdu_data_notification_with_datetime(date_field: bytes) -> None:
    apdu = decode_apdu(b"\x0f\xc0\x00\x01\xdb" + date_field + BODY)
    assert isinstance(apdu, DataNotification)
    assert (apdu.long_invoke_id, apdu.priority_high, apdu.confirmed) == (0x1DB, True, True)
    assert apdu.datetime is not None
    assert str(apdu.datetime.to_datetime()) == "2020-01-25 14:00:10"
    assert apdu.body == Data.structure(Data.uint32(42))


def test_apdu_data_notification_without_datetime() -> None:
    apdu = decode_apdu(bytes.fromhex("0f000001db00") + BODY)
    assert isinstance(apdu, DataNotification)
    assert (apdu.long_invoke_id, apdu.priority_high, apdu.confirmed, apdu.datetime) == (
        475,
        False,
        False,
        None,
    )


@pytest.mark.parametrize(
    "apdu",
    [
        b"",
        b"\x0f",
        b"\x0f\x00\x00\x00",
        b"\x0f\x00\x00\x00\x00",  # no date-time field
        b"\x0f\x00\x00\x00\x00\x05" + DT12[:5] + BODY,  # date-time of 5 bytes
        b"\x0f\x00\x00\x00\x00\x0c" + DT12[:6],  # truncated date-time
        b"\x0f\x00\x00\x00\x00\x00",  # no body
        b"\x0f\x00\x00\x00\x00\x00" + BODY + b"\x00",  # trailing byte
        b"\x0f\x00\x00\x00\x00\x00\x02\x05\x06",  # truncated body
        b"\xc0\x01\x00",  # a get-request: not a push
        b"\xc2\x02",  # bad OPTIONAL flag
    ],
)
def test_apdu_broken_is_decode_error(apdu: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_apdu(apdu)


def test_apdu_event_notification() -> None:
    obis = Obis(0, 0, 96, 11, 0, 255)
    raw = b"\xc2\x01\x0c" + DT12 + b"\x00\x01" + obis.to_bytes() + b"\x02" + encode_data(Data.uint16(7))
    event = decode_apdu(raw)
    assert isinstance(event, EventNotification)
    assert (event.class_id, event.obis, event.attribute_id, event.value) == (1, obis, 2, Data.uint16(7))
    assert event.time is not None
    no_time = decode_apdu(b"\xc2\x00\x00\x01" + obis.to_bytes() + b"\x02" + encode_data(Data.uint16(7)))
    assert isinstance(no_time, EventNotification) and no_time.time is None


@given(st.binary(max_size=200))
def test_apdu_any_bytes_decode_or_decode_error(data: bytes) -> None:
    for apdu in (data, b"\x0f" + data, b"\x0f\x00\x00\x00\x00\x0c" + data, b"\xc2" + data):
        try:
            result = decode_apdu(apdu)
        except DecodeError:
            continue
        assert isinstance(result, DataNotification | EventNotification)
        assert isinstance(getattr(result, "body", getattr(result, "value", None)), Data)
