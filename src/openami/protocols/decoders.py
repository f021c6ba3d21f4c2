"""One way to call every offline decoder: ``openami decode <protocol>`` and ``openami bench decode`` use it.

Each protocol package has its own entry point and error family; this table maps a protocol name to a
function ``(bytes, key) -> JSON-ready value`` and to the exceptions that mean "the input is bad" (as
opposed to a bug). Packages are imported on first use, so a command that decodes M-Bus does not load
the DLMS stack.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["DECODERS", "Decoder", "UndecodableInput", "decoder"]


class UndecodableInput(Exception):
    """The input is not a valid message of the protocol; the message says why, in one line."""


@dataclass(frozen=True, slots=True)
class Decoder:
    """How to decode one protocol: ``module.function(data[, key])`` then ``module.to_json``."""

    module: str
    function: str
    errors: str
    """Name, in ``module``, of the base class of the protocol's input errors."""
    takes_key: bool = False
    sequence: str | None = None
    """Name, in ``module``, of a function decoding several captures in order (``(parts, key=)`` -> list),
    for protocols whose telegrams depend on earlier ones (wM-Bus compact frames need the full frame)."""

    def decode(self, data: bytes, key: bytes | None = None) -> Any:
        """The JSON-ready decode of ``data``; :class:`UndecodableInput` for bad input."""
        module = importlib.import_module(self.module)
        errors: type[Exception] = getattr(module, self.errors)
        function: Callable[..., Any] = getattr(module, self.function)
        if key is not None and not self.takes_key:
            raise UndecodableInput("this protocol is not encrypted: --key does not apply")
        try:
            decoded = function(data, key=key) if self.takes_key else function(data)
        except errors as exc:
            raise UndecodableInput(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        return module.to_json(decoded)

    def decode_sequence(self, parts: list[bytes], key: bytes | None = None) -> list[Any]:
        """The JSON-ready decode of each capture, in order, through :attr:`sequence` (one capture
        through :meth:`decode`); :class:`UndecodableInput` names the first bad one."""
        if self.sequence is None or len(parts) == 1:
            return [self.decode(part, key) for part in parts]
        module = importlib.import_module(self.module)
        errors: type[Exception] = getattr(module, self.errors)
        function: Callable[..., list[Any]] = getattr(module, self.sequence)
        try:
            decoded = function(parts, key=key)
        except errors as exc:
            raise UndecodableInput(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        return [module.to_json(one) for one in decoded]


DECODERS: Final[dict[str, Decoder]] = {
    "mbus": Decoder("openami.protocols.mbus", "decode_frame", "MbusError"),
    "wmbus": Decoder(
        "openami.protocols.wmbus",
        "decode_telegram",
        "WmbusError",
        takes_key=True,
        sequence="decode_telegrams",
    ),
    "iec62056-21": Decoder("openami.protocols.iec62056_21", "parse_readout", "Iec62056Error"),
    "dsmr": Decoder("openami.protocols.dsmr", "parse_telegram", "DsmrError"),
    "sml": Decoder("openami.protocols.sml", "parse_file", "SmlError"),
}


def decoder(name: str) -> Decoder:
    found = DECODERS.get(name)
    if found is None:
        raise KeyError(f"no decoder for {name!r} (one of {', '.join(sorted(DECODERS))})")
    return found
