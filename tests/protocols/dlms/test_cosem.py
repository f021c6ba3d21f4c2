"""COSEM interface classes as data: table consistency and short-name arithmetic."""

from __future__ import annotations

import pytest

from openami.protocols.dlms.axdr import DataType
from openami.protocols.dlms.cosem import CLASSES, InterfaceClass, short_name, short_name_of_method

REQUIRED = {1, 3, 4, 5, 7, 8, 9, 12, 15, 17, 18, 20, 21, 22, 40, 64, 70, 71, 72}


def test_required_classes_present() -> None:
    assert set(CLASSES) >= REQUIRED


@pytest.mark.parametrize("ic", list(CLASSES.values()), ids=lambda c: c.name)
def test_class_consistency(ic: InterfaceClass) -> None:
    assert CLASSES[ic.class_id] is ic
    assert [a.index for a in ic.attributes] == list(range(1, len(ic.attributes) + 1))
    first = ic.attributes[0]
    assert (first.name, first.types, first.static) == ("logical_name", (DataType.OCTET_STRING,), True)
    assert len({a.name for a in ic.attributes}) == len(ic.attributes)
    assert all(a.types for a in ic.attributes)
    indexes = [m.index for m in ic.methods]
    assert len(set(indexes)) == len(indexes)
    assert all(i >= 1 for i in indexes)
    assert len({m.name for m in ic.methods}) == len(ic.methods)
    if ic.first_method_offset is not None:
        # Methods never overlap the attributes' short names.
        assert ic.first_method_offset >= 8 * len(ic.attributes)


@pytest.mark.parametrize(
    ("class_id", "methods"),
    [
        (3, {1: "reset"}),
        (7, {1: "reset", 2: "capture"}),
        (8, {1: "adjust_to_quarter", 5: "preset_adjusting_time", 6: "shift_time"}),
        (
            18,
            {1: "image_transfer_initiate", 2: "image_block_transfer", 3: "image_verify", 4: "image_activate"},
        ),
        (70, {1: "remote_disconnect", 2: "remote_reconnect"}),
        (15, {1: "reply_to_HLS_authentication", 2: "change_HLS_secret"}),
        (40, {1: "push"}),
        (64, {1: "security_activate", 2: "key_transfer"}),
    ],
)
def test_method_spot_checks(class_id: int, methods: dict[int, str]) -> None:
    ic = CLASSES[class_id]
    for index, name in methods.items():
        assert ic.method_index(name) == index


def test_attribute_lookups() -> None:
    register = CLASSES[3]
    assert register.attribute_index("scaler_unit") == 3
    assert register.attribute(2).name == "value"
    assert not register.attribute(2).static
    clock = CLASSES[8]
    assert clock.attribute_index("time") == 2
    assert DataType.DATE_TIME in clock.attribute(2).types
    assert CLASSES[7].attribute_index("capture_objects") == 3
    with pytest.raises(KeyError):
        register.attribute(4)
    with pytest.raises(KeyError):
        register.attribute_index("nope")
    with pytest.raises(KeyError):
        register.method_index("nope")


def test_short_name_attributes() -> None:
    assert short_name(0x2000, 1) == 0x2000
    assert short_name(0x2000, 2) == 0x2008
    assert short_name(0x2000, 3) == 0x2010
    # The logical device name object's reserved base name.
    assert short_name(0xFD00, 2) == 0xFD08


def test_short_name_methods() -> None:
    assert short_name_of_method(0x2000, 3, 1) == 0x2028  # Register reset
    assert short_name_of_method(0x4000, 7, 2) == 0x4060  # Profile generic capture
    assert short_name_of_method(0x1000, 8, 6) == 0x1088  # Clock shift_time
    assert short_name_of_method(0x3000, 70, 2) == 0x3028  # remote_reconnect
    assert short_name_of_method(0x0800, 18, 4) == 0x0858  # image_activate


@pytest.mark.parametrize(
    ("base", "attribute"), [(0x2000, 0), (0x2001, 1), (-8, 1), (0x10000, 1), (0xFFF8, 2)]
)
def test_short_name_refusals(base: int, attribute: int) -> None:
    with pytest.raises(ValueError, match=r"attribute|base name|out of range"):
        short_name(base, attribute)


def test_short_name_method_refusals() -> None:
    with pytest.raises(ValueError, match="no method"):
        short_name_of_method(0x2000, 3, 2)
    with pytest.raises(ValueError, match="no method"):
        short_name_of_method(0x2000, 1, 1)
    with pytest.raises(ValueError, match="not known"):
        short_name_of_method(0x2000, 72, 1)
    with pytest.raises(KeyError):
        short_name_of_method(0x2000, 9999, 1)


def test_classes_are_read_only() -> None:
    with pytest.raises(TypeError):
        CLASSES[99] = CLASSES[1]  # type: ignore[index]
