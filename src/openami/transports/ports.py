"""Checking a listening port before a server library tries it.

Servers we embed (amqtt, uvicorn) report a taken port as a traceback or a generic error; we probe the
port first and raise :class:`PortInUseError` naming the setting to change, because a port held by some
other program is the most common first-run failure on a shared machine.
"""

from __future__ import annotations

import errno
import socket

from openami.transports.errors import PortInUseError, TransportError


def probe_port(host: str, port: int, setting: str) -> int:
    """Bind ``host:port`` as asyncio servers will (SO_REUSEADDR) and return the port (0: the OS's pick)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"cannot listen on {host}:{port}: address already in use (set {setting})"
                ) from exc
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        return int(sock.getsockname()[1])
