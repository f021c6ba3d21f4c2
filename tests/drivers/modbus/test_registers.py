"""Register maps: exact decoding per type and word order, request planning, map checks."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openami.drivers.modbus.models import HEAT, MODELS, SDM630
from openami.drivers.modbus.registers import (
    MAX_REGISTERS_PER_READ,
    Point,
    RegisterMap,
    RegisterMapError,
    decode_point,
    encode_point,
    plan_reads,
)


@pytest.mark.parametrize(
    ("point", "registers", "value"),
    [
        (Point("x", 0, "u16", ""), [0xFFFF], 65535.0),
        (Point("x", 0, "s16", ""), [0xFFFE], -2.0),
        (Point("x", 0, "u32", ""), [0x0001, 0x0002], 65538.0),
        (Point("x", 0, "u32", "", word_order="little"), [0x0002, 0x0001], 65538.0),
        (Point("x", 0, "s32", "", scale=0.01), [0xFFFF, 0xFF9C], -1.0),
        (Point("x", 0, "f32", ""), [0x4348, 0x0000], 200.0),  # 200.0 as IEEE 754 single
        (Point("x", 0, "f32", "", word_order="little"), [0x0000, 0x4348], 200.0),
        (Point("x", 0, "f64", ""), [0x3FF0, 0, 0, 0], 1.0),
        (Point("x", 0, "u64", "", scale=1000), [0, 0, 0, 7], 7000.0),
        (Point("x", 0, "s64", ""), [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1.0),
    ],
)
def test_decoding_is_exact(point: Point, registers: list[int], value: float) -> None:
    assert decode_point(point, registers) == value


def test_float_not_available_stays_nan() -> None:
    assert math.isnan(decode_point(Point("x", 0, "f32", ""), [0x7FC0, 0x0000]))


@given(st.sampled_from([p for m in MODELS.values() for p in m.points]), st.integers(0, 10**6))
def test_encode_then_decode_gives_the_value_back(point: Point, steps: int) -> None:
    value = float(steps % 30000) if point.type == "f32" else (steps % 30000) * point.scale
    assert decode_point(point, encode_point(point, value)) == pytest.approx(value, rel=1e-6)


def test_wrong_register_count_is_refused() -> None:
    with pytest.raises(RegisterMapError, match="expected 2 registers"):
        decode_point(Point("x", 0, "u32", ""), [1])
    with pytest.raises(RegisterMapError, match="does not fit"):
        encode_point(Point("x", 0, "u16", ""), 70000)


def test_contiguous_points_are_read_in_one_request() -> None:
    blocks = plan_reads(HEAT.points)
    assert [(b.table, b.start, b.count, len(b.points)) for b in blocks] == [("holding", 0, 10, 6)]


def test_gaps_and_the_protocol_limit_split_requests() -> None:
    blocks = plan_reads(SDM630.points)
    assert [(b.start, b.count) for b in blocks] == [(0x00, 0x12), (0x34, 2), (0x46, 6)]
    assert [(b.start, b.count) for b in plan_reads(SDM630.points, max_gap=20)] == [(0x00, 0x12), (0x34, 24)]
    assert [(b.start, b.count) for b in plan_reads(SDM630.points, max_gap=40)] == [(0x00, 0x4C)]
    many = tuple(Point(f"c{i}", 2 * i, "u32", "") for i in range(100))
    sizes = [b.count for b in plan_reads(many)]
    assert sum(sizes) == 200 and max(sizes) <= MAX_REGISTERS_PER_READ


def test_overlapping_points_are_refused_when_the_map_is_built() -> None:
    with pytest.raises(RegisterMapError, match="share holding register 1"):
        RegisterMap("bad", (Point("a", 0, "u32", ""), Point("b", 1, "u16", "")))
    with pytest.raises(RegisterMapError, match="out of range"):
        RegisterMap("bad", (Point("a", 0xFFFF, "u32", ""),))
