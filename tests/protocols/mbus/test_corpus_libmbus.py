"""The libmbus corpus, read in place: every test frame decodes to libmbus's normalised values, every
error frame ends in a typed :class:`MbusError`, every unsupported frame in a value or a typed error.

How libmbus's spellings map onto ours is documented in :mod:`tests.protocols.mbus.libmbus_corpus`.
Known differences are listed in :data:`KNOWN_DIFFERENCES` with the reason we keep ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openami.protocols.mbus import MbusError, decode_frame, to_json
from tests.conftest import corpora_dir
from tests.protocols.mbus.libmbus_corpus import compare, corpus_root

KNOWN_DIFFERENCES = {
    # DIF 0x3C (value during error state, 8-digit BCD) carries BD EB DD DD: non-decimal BCD digits, the
    # standard's way of flagging an error. libmbus skips high nibbles >= A and adds low ones as if they
    # were digits (13131113); we return the digits as the string "DDDDEBBD" rather than a made-up number.
    "ELS_Elster-F96-Plus": {"record 4 value", "record 5 value"},
}


def _names(folder: str) -> list[str]:
    """File stems for parametrisation; a placeholder when the corpus is absent (the test then skips)."""
    try:
        return sorted(p.name for p in (corpus_root(corpora_dir()) / folder).glob("*.hex"))
    except BaseException:  # corpora_dir() skips or fails outside a test: let the test report it
        return ["corpus-missing"]


def _path(folder: str, name: str) -> Path:
    return corpus_root(corpora_dir()) / folder / name


def _lenient_hex(path: Path) -> bytes:
    """Space-separated hex as the corpus writes it; a malformed token (``D`` in manual_frame1) is read
    as the number it spells, so the decoder, not the test, meets the broken frame."""
    return bytes(int(token, 16) & 0xFF for token in path.read_text().split())


@pytest.mark.parametrize("name", _names("test-frames"))
def test_frame_matches_libmbus(name: str) -> None:
    path = _path("test-frames", name)
    diffs = compare(path)
    known = KNOWN_DIFFERENCES.get(path.stem, set())
    unexpected = [d for d in diffs if not any(d.startswith(k) for k in known)]
    assert unexpected == [], "\n".join(unexpected)
    assert json.loads(json.dumps(to_json(decode_frame(_lenient_hex(path)))))["records"]  # JSON-serialisable


def test_corpus_match_count() -> None:
    """The figure the report quotes: frames whose every field matches libmbus (known differences count
    as mismatches here)."""
    paths = sorted((corpus_root(corpora_dir()) / "test-frames").glob("*.hex"))
    assert len(paths) >= 49
    matching = sum(1 for p in paths if not compare(p))
    assert matching >= len(paths) - len(KNOWN_DIFFERENCES)


@pytest.mark.parametrize("name", _names("error-frames"))
def test_error_frame_is_typed_error(name: str) -> None:
    with pytest.raises(MbusError):
        decode_frame(_lenient_hex(_path("error-frames", name)))


@pytest.mark.parametrize("name", _names("unsupported-frames"))
def test_unsupported_frame_value_or_typed_error(name: str) -> None:
    try:
        telegram = decode_frame(_lenient_hex(_path("unsupported-frames", name)))
    except MbusError:
        return
    to_json(telegram)
