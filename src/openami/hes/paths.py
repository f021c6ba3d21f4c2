"""Communication paths: what a meter's sessions go through, named so that limits can be counted on it.

Throttling is not per meter but per shared bottleneck: a concentrator answers a few sessions at a time,
a modem pool or cell has so many channels, a TCP-to-serial converter talks to one meter at a time. A
job carries the name of its bottleneck in ``job.path``, and the job store counts running jobs per path
at claim time (ADR 0013), so a path's limit holds across every worker.

A meter's path is derived from its communication device (``meter.comm_device_id``) and that device's
parents (``comm_device.parent_id``), walked up to the root:

0. a meter on a shared serial line (its nearest address is ``mbus+tcp``, ``mbus+serial``, ``iec+tcp``,
   ``hdlc+tcp``, ``hdlc+serial``, ``dsmr+tcp`` or ``sml+tcp``): ``"port:<host>:<port>"`` or
   ``"port:<tty>"``, whatever the devices above it, because the line talks to one meter at a time
   and every meter on it is registered on a device of its own;
1. else the topmost device of kind ``gateway`` or ``concentrator`` in that chain: ``"gateway:<ident>"`` or
   ``"concentrator:<ident>"`` (every meter under one gateway shares its sessions, whatever hangs
   between);
2. else the topmost ``modem``: ``"modem:<ident>"`` (a modem pool or cell registered as a modem, with
   its modems under it);
3. else the nearest device address: ``"port:<host>:<port>"`` (a TCP converter), or ``"port:<path>"``
   for a serial line;
4. else no path (a meter on no device): not throttled.

:func:`limit_for` and :func:`rate_for` look a path's kind (the part before the first colon) up in the
``hes_path_limits`` (concurrent sessions) and ``hes_path_rates`` (new connections per second) settings;
a kind without an entry is unlimited.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, select

from openami.store.schema import comm_device, meter

__all__ = [
    "PATH_KINDS",
    "Device",
    "DeviceTree",
    "limit_for",
    "path_for",
    "path_kind",
    "paths_for_meters",
    "rate_for",
]

PATH_KINDS: Final = ("gateway", "concentrator", "modem", "port")
_SHARED: Final = frozenset({"gateway", "concentrator"})
_LINES: Final = frozenset(
    {"mbus+tcp", "mbus+serial", "iec+tcp", "hdlc+tcp", "hdlc+serial", "dsmr+tcp", "sml+tcp"}
)
"""Address schemes of a shared serial line (a converter or a tty): one master talks on it at a time, so
the line is the path, wherever it hangs."""
_PATH_LENGTH: Final = 128
"""The width of ``job.path``."""
_CHUNK: Final = 500
_MAX_DEPTH: Final = 64
"""Longest parent chain walked; a deeper one (or a cycle written behind the repositories) stops here."""

N = TypeVar("N", int, float)


@dataclass(frozen=True, slots=True)
class Device:
    """What the path of a device depends on."""

    id: int
    parent_id: int | None
    kind: str
    ident: str
    address: str | None


def _fit(path: str) -> str:
    """``path`` within ``job.path``'s width: an overlong one keeps its head and gets a digest tail, so
    two long addresses never share a path by truncation."""
    if len(path) <= _PATH_LENGTH:
        return path
    digest = hashlib.blake2b(path.encode(), digest_size=8).hexdigest()
    return f"{path[: _PATH_LENGTH - len(digest) - 1]}~{digest}"


def _port(address: str) -> str | None:
    parts = urlsplit(address.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.hostname and port is not None:
        return f"port:{parts.hostname}:{port}"
    where = parts.netloc or parts.path
    return f"port:{where}" if where else None


def path_for(chain: Sequence[Device]) -> str | None:
    """The path of a meter read through ``chain[0]``, whose parent is ``chain[1]`` and so on up to the
    root (the module docstring's rules); None for an empty chain or one with nothing to name."""
    line = next((device.address for device in chain if device.address), None)
    if line is not None and urlsplit(line.strip()).scheme in _LINES:
        port = _port(line)
        if port is not None:
            return _fit(port)
    for kinds in (_SHARED, frozenset({"modem"})):
        top = next((device for device in reversed(chain) if device.kind in kinds), None)
        if top is not None:
            return _fit(f"{top.kind}:{top.ident}")
    address = next((device.address for device in chain if device.address), None)
    port = None if address is None else _port(address)
    return None if port is None else _fit(port)


class DeviceTree:
    """The communication devices met so far and their parents, loaded in bulk: one query per chunk of
    new devices, then one per level of parents not yet known."""

    def __init__(self) -> None:
        self._devices: dict[int, Device] = {}
        self._paths: dict[int, str | None] = {}

    def load(self, conn: Connection, device_ids: Iterable[int]) -> None:
        """Make the devices ``device_ids`` and all their ancestors known."""
        wanted = {device_id for device_id in device_ids if device_id not in self._devices}
        for _ in range(_MAX_DEPTH):
            if not wanted:
                return
            ordered = sorted(wanted)
            for start in range(0, len(ordered), _CHUNK):
                rows = conn.execute(
                    select(
                        comm_device.c.id,
                        comm_device.c.parent_id,
                        comm_device.c.kind,
                        comm_device.c.ident,
                        comm_device.c.address,
                    ).where(comm_device.c.id.in_(ordered[start : start + _CHUNK]))
                )
                for row in rows:
                    self._devices[row.id] = Device(row.id, row.parent_id, row.kind, row.ident, row.address)
            parents = {self._devices[i].parent_id for i in wanted if i in self._devices}
            wanted = {i for i in parents if i is not None and i not in self._devices}

    def chain(self, device_id: int | None) -> list[Device]:
        """Device ``device_id`` and its parents up to the root, as far as known (empty for None)."""
        chain: list[Device] = []
        seen: set[int] = set()
        current = device_id
        while current is not None and current not in seen and len(chain) < _MAX_DEPTH:
            device = self._devices.get(current)
            if device is None:
                break
            chain.append(device)
            seen.add(current)
            current = device.parent_id
        return chain

    def path(self, device_id: int | None) -> str | None:
        """The path of a meter read through ``device_id`` (None: on no device)."""
        if device_id is None:
            return None
        if device_id not in self._paths:
            self._paths[device_id] = path_for(self.chain(device_id))
        return self._paths[device_id]


def paths_for_meters(conn_or_engine: Connection | Engine, meter_ids: Iterable[int]) -> dict[int, str | None]:
    """The path of each of ``meter_ids`` (None: not throttled); ids of no meter are left out."""
    if isinstance(conn_or_engine, Engine):
        with conn_or_engine.connect() as conn:
            return paths_for_meters(conn, meter_ids)
    conn = conn_or_engine
    ordered = sorted(set(meter_ids))
    devices: dict[int, int | None] = {}
    for start in range(0, len(ordered), _CHUNK):
        rows = conn.execute(
            select(meter.c.id, meter.c.comm_device_id).where(meter.c.id.in_(ordered[start : start + _CHUNK]))
        )
        devices.update((row.id, row.comm_device_id) for row in rows)
    tree = DeviceTree()
    tree.load(conn, (device for device in devices.values() if device is not None))
    return {meter_id: tree.path(device) for meter_id, device in devices.items()}


def path_kind(path: str | None) -> str | None:
    """``"concentrator"`` for ``"concentrator:C-1"``; None for no path."""
    return path.partition(":")[0] if path else None


def _lookup(path: str | None, table: Mapping[str, N]) -> N | None:
    kind = path_kind(path)
    return None if kind is None else table.get(kind)


def limit_for(path: str | None, limits: Mapping[str, int]) -> int | None:
    """How many sessions ``path`` may carry at once (``hes_path_limits``); None: unlimited."""
    return _lookup(path, limits)


def rate_for(path: str | None, rates: Mapping[str, float]) -> float | None:
    """How many new connections per second ``path`` may open (``hes_path_rates``); None: unlimited."""
    return _lookup(path, rates)
