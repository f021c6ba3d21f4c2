"""One decoded data record (EN 13757-3), the unit of output shared by wired and wireless M-Bus."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DataRecord", "Value"]

Value = float | int | str | bytes | None
"""``None`` for records that carry no data (data field 0x0 or 0x8, global readout) and for profile
elements the meter marks invalid."""


@dataclass(frozen=True, slots=True)
class DataRecord:
    """One data record, its value normalised to the base unit of its quantity.

    ``dif``/``dife``/``vif``/``vife`` and ``raw`` (the data field as sent) keep what the meter said, so
    a consumer can re-interpret a record this decoder got wrong; ``annotations`` lists the combinable
    VIFE (``per/h``, ``upper_limit``, ``record_error_5``, unknown ``vife_0x..``).
    """

    value: Value
    unit: str | None
    quantity: str
    function: str
    storage: int
    tariff: int
    subunit: int
    dif: int
    dife: tuple[int, ...] = ()
    vif: int | None = None
    vife: tuple[int, ...] = ()
    annotations: tuple[str, ...] = ()
    raw: bytes = b""
