"""DLMS/COSEM meters read by the gateway: the head-end's own collector, with the gateway's keys,
invocation counters and archive.

A ``dlms`` meter's address takes the head-end's forms (:mod:`openami.hes.dlms_targets`):
``tcp://host:port`` (the IEC 62056-47 wrapper, TCP/4059 on IP meters) and ``hdlc+tcp://host:port`` (HDLC
frames through a terminal server or TCP serial converter), with the same ``client``, ``server``,
``physical`` and ``auth`` options. ``fep://`` addresses are refused: a gateway runs no front-end
processor, it dials its meters.

The head-end keeps a meter's secrets in its key vault; a gateway has them in its configuration (the
meter's ``keys``, sent inline in the head-end's end-to-end sealed CONFIG). They also set the security
unless the address names ``auth``:

- ``encryption`` and ``authentication`` keys: HLS-GMAC with every APDU glo-ciphered (suite 0, so both
  are AES-128 keys), as the management client (SAP 1);
- ``password``: LLS, as the management client;
- no keys: the public client (SAP 16) without security. It may read but not set a clock, so such a
  meter whose clock is off fails its read (as it would from the head-end).

A ``client=`` in the address wins over these defaults. A meter whose keys do not fit (an ``auth=hls``
meter without both keys, an AES-256 key, an encryption key without the authentication key) is skipped
with the reason, naming the ``keys`` field.

Per round the collector (:class:`~openami.hes.dlms_collector.DlmsCollector`) checks and sets the
clock, and reads the load profile and the event logs incrementally. It resumes from what the
*archive* holds (:class:`ArchiveResume`): a gateway that was down for a day, or whose readings were
already forwarded, still reads each interval once and leaves no gap. Ciphered sessions take their
invocation counters in blocks kept in the archive (:class:`ArchiveCounters`), so a restart never makes
a meter see a counter twice. The gateway calls itself by a client system title of its own,
:func:`client_system_title` (``OAG`` and five bytes derived from its id).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final
from urllib.parse import parse_qs, urlsplit

from openami.bus.base import Publisher
from openami.edge.archive import Archive
from openami.edge.config import GatewayConfig, MeterKeys
from openami.hes.dlms_collector import CollectorOptions, DlmsCollector, ResumeTimes
from openami.hes.dlms_counters import SESSION_BLOCK
from openami.hes.dlms_session import DlmsSessions
from openami.hes.dlms_targets import AddressError, DlmsTarget, parse_address
from openami.hes.targets import MeterRow
from openami.protocols.dlms.association import MANAGEMENT_CLIENT, PUBLIC_CLIENT
from openami.security.keyvault import MeterSecrets

__all__ = [
    "DLMS_EVENT_MARK",
    "ArchiveCounters",
    "ArchiveResume",
    "check_dlms_address",
    "client_system_title",
    "dlms_collector",
    "dlms_target",
]

DLMS_EVENT_MARK: Final = "dlms_code"
"""The detail key of the events the collector reads from a meter's logs (and only those)."""
_KEY_LENGTH: Final = 16  # suite 0, AES-GCM-128: the only suite the DLMS stack speaks


def client_system_title(gateway_id: str) -> bytes:
    """The gateway's own 8-byte system title: ``OAG`` and the first 5 bytes of SHA-256 of its id, so
    each gateway has its own invocation counters at a meter it shares with the head-end."""
    return b"OAG" + hashlib.sha256(gateway_id.encode()).digest()[:5]


def check_dlms_address(address: str) -> None:
    """``ValueError`` naming the problem when the gateway cannot dial ``address``."""
    endpoint = parse_address(address)
    if endpoint.via == "fep":
        raise AddressError(
            f"{address!r}: a gateway has no front-end processor; use tcp://, hdlc+tcp:// or hdlc+serial://"
        )


def dlms_target(row: MeterRow, keys: MeterKeys | None) -> DlmsTarget:
    """The target of one configured meter, its security taken from ``keys`` (module docstring);
    ``ValueError`` naming the problem (the address, or the ``keys`` field) when it cannot be read."""
    check_dlms_address(row.address)
    endpoint = parse_address(row.address)
    given = parse_qs(urlsplit(row.address.strip()).query)
    ek = keys.encryption_key if keys is not None else None
    ak = keys.authentication_key if keys is not None else None
    password = keys.lls_password if keys is not None else None
    if "auth" in given:
        auth = endpoint.auth
    else:
        auth = "hls" if ek is not None or ak is not None else "lls" if password else "none"
    if auth == "hls":
        if ek is None or ak is None:
            missing = "keys.authentication" if ek is not None else "keys.encryption"
            raise ValueError(f"HLS-GMAC needs keys.encryption and keys.authentication; {missing} is missing")
        for name, key in (("keys.encryption", ek), ("keys.authentication", ak)):
            if len(key) != _KEY_LENGTH:
                raise ValueError(f"{name}: DLMS security suite 0 takes AES-128 keys (32 hex digits)")
    elif auth == "lls" and not password:
        raise ValueError("LLS needs the meter's keys.password")
    client = endpoint.client_sap
    if "client" not in given:
        client = PUBLIC_CLIENT if auth == "none" else MANAGEMENT_CLIENT
    endpoint = dataclasses.replace(endpoint, auth=auth, client_sap=client)
    secrets = None
    if keys is not None:
        # The meter's own title is learnt from its AARE; the vault's copy is not needed here.
        secrets = MeterSecrets(b"", ek, ak, password)
    return DlmsTarget(row.tenant_id, row.tenant, row.meter_id, row.serial, endpoint, secrets)


class ArchiveResume:
    """Resume points from the gateway's archive (:class:`~openami.hes.dlms_collector.ResumePoints`):
    the last interval held on every profile channel, and the last event read from the meter's logs,
    by serial (a gateway's meter ids only number its current list)."""

    def __init__(self, archive: Archive) -> None:
        self._archive = archive

    def stored_until(self, targets: Sequence[DlmsTarget]) -> ResumeTimes:
        serials = [t.serial for t in targets]
        profile = self._archive.last_profile_times(serials)
        events = self._archive.last_event_times(serials, detail_key=DLMS_EVENT_MARK)
        return (
            {t.meter_id: profile[t.serial] for t in targets if t.serial in profile},
            {t.meter_id: events[t.serial] for t in targets if t.serial in events},
        )


class ArchiveCounters:
    """Invocation counters towards each meter in blocks kept in the archive, by serial and the
    gateway's system title (:class:`~openami.hes.dlms_session.InvocationCounters`; the blocks work as
    the head-end's do, :mod:`openami.hes.dlms_counters`)."""

    def __init__(self, archive: Archive, block: int = SESSION_BLOCK) -> None:
        self._archive = archive
        self._block = block

    @staticmethod
    def _name(target: DlmsTarget, client_title: bytes) -> str:
        return f"dlms-ic:{target.serial}:{client_title.hex().upper()}"

    def reserve(self, target: DlmsTarget, client_title: bytes) -> int:
        return self._archive.reserve_block(self._name(target, client_title), self._block)

    def release(self, target: DlmsTarget, client_title: bytes, start: int, last_used: int | None) -> None:
        following = start if last_used is None else last_used + 1
        self._archive.release_block(self._name(target, client_title), start, self._block, following)


def dlms_collector(
    config: GatewayConfig, archive: Archive, sink: Publisher, *, now: Callable[[], datetime]
) -> DlmsCollector:
    """The gateway's DLMS collector: the head-end's, resuming from ``archive`` and publishing to
    ``sink``, its sessions opened with the configured keys and archive-kept counters."""
    options = CollectorOptions(
        client_system_title=client_system_title(config.id),
        timeout_s=config.read_timeout_s,
        concurrency=config.concurrency,
    )
    sessions = DlmsSessions(
        None, options.client_system_title, options.timeout_s, counters=ArchiveCounters(archive)
    )
    return DlmsCollector(None, sink, options, now=now, resume=ArchiveResume(archive), sessions=sessions.open)
