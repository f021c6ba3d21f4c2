"""Failures of the transport layer (sockets, brokers), kept apart from protocol and bus errors.

Callers (the CLI, the app factory) catch these to print one actionable line instead of a traceback:
the most common first-run failure on a shared machine is a port some other program already holds.
"""

from __future__ import annotations


class TransportError(Exception):
    """Base of every transport failure."""


class PortInUseError(TransportError):
    """A port we were told to listen on is already taken by another process."""


class ConnectError(TransportError):
    """A peer (broker, meter, gateway) could not be reached or refused the connection."""
