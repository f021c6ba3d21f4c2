"""The link between OpenAMI's gateway agent and the head-end: sealed, compressed, sequenced envelopes.

Sans-IO: :func:`seal` and :class:`Opener` turn payload bytes into envelopes and back; they never touch
a socket, a clock or a file. What travels inside (reading batches, acknowledgements, health, commands)
is the caller's JSON; this package only guarantees that a broker in between sees neither plaintext nor
a way to forge, reorder, replay or redirect an envelope. See ``docs/drivers/gateway-link.md``.
"""

from openami.protocols.edge.envelope import (
    HEADER_LENGTH,
    KEY_LENGTH,
    Compression,
    Direction,
    Envelope,
    Header,
    Kind,
    Opener,
    ReplayWindow,
    peek,
    seal,
)
from openami.protocols.edge.errors import (
    EdgeLinkError,
    EnvelopeFormatError,
    EnvelopeTooLargeError,
    ReplayError,
    TamperedEnvelopeError,
)

__all__ = [
    "HEADER_LENGTH",
    "KEY_LENGTH",
    "Compression",
    "Direction",
    "EdgeLinkError",
    "Envelope",
    "EnvelopeFormatError",
    "EnvelopeTooLargeError",
    "Header",
    "Kind",
    "Opener",
    "ReplayError",
    "ReplayWindow",
    "TamperedEnvelopeError",
    "peek",
    "seal",
]
