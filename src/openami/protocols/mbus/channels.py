"""Channel names for the current values of an M-Bus telegram, shared by every bearer of EN 13757-3 records
(wired M-Bus, wireless M-Bus, M-Bus over LoRaWAN) so one meter's channels mean the same whatever
carried them.

Each current value (storage 0, numeric) is named after its quantity (``energy``, ``volume``,
``flow_temperature`` ...), then ``:t<tariff>``, ``:u<subunit>`` and the function when not instantaneous
(``energy:t1``, ``power:maximum``). A second record of the same name in one telegram gets ``#2``, in
frame order, so every channel keeps meaning the same record. Historic values (storage > 0), values
"during error state" and identifiers (fabrication number, versions, access codes) are not current
readings and are left out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from openami.protocols.mbus.datarecord import DataRecord
from openami.protocols.mbus.vif import IDENTIFIER_QUANTITIES

__all__ = ["channel_codes"]


def channel_codes(records: Sequence[DataRecord]) -> list[tuple[str, DataRecord]]:
    """(channel code, record) for the current numeric values, in frame order (module docstring)."""
    seen: dict[str, int] = defaultdict(int)
    found = []
    for record in records:
        if record.storage or isinstance(record.value, bool) or not isinstance(record.value, int | float):
            continue
        if record.function == "value_during_error" or record.quantity in IDENTIFIER_QUANTITIES:
            continue
        code = record.quantity
        if record.tariff:
            code += f":t{record.tariff}"
        if record.subunit:
            code += f":u{record.subunit}"
        if record.function != "instantaneous":
            code += f":{record.function}"
        seen[code] += 1
        found.append((code if seen[code] == 1 else f"{code}#{seen[code]}", record))
    return found
