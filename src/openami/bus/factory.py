"""Pick the bus implementation from a URL, so deployments switch backends by configuration alone."""

from __future__ import annotations

from urllib.parse import urlsplit

from openami.bus.base import Bus, BusError
from openami.bus.memory import MemoryBus

NATS_SCHEMES = ("nats", "tls")


def make_bus(url: str, namespace: str = "") -> Bus:
    """``"memory"`` gives the in-process bus; ``nats://`` or ``tls://`` URLs (comma-separated for a cluster)
    give the JetStream bus.

    ``namespace`` keeps installations (or test runs) that share one NATS server apart: it prefixes both
    stream names and subjects, so their streams, durables and messages never meet.
    nats-py is imported only here, so the base install, which uses the in-process bus, does not need it.
    """
    if url in ("memory", "memory://"):
        return MemoryBus()
    if urlsplit(url).scheme in NATS_SCHEMES:
        try:
            from openami.bus.nats import NatsBus
        except ModuleNotFoundError as exc:
            raise BusError(
                f"the NATS bus needs nats-py, which is not installed ({exc}): install openami[nats]"
            ) from exc
        if namespace:
            return NatsBus(url, f"OPENAMI_{namespace.upper()}", subject_prefix=namespace)
        return NatsBus(url)
    raise BusError(f"unknown bus URL {url!r}: use 'memory' or a nats:// / tls:// URL")
