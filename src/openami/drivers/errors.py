"""Errors every meter driver shares, so the HES can handle any driver's failures uniformly."""

from __future__ import annotations


class DriverError(Exception):
    """Base of driver failures: data a driver received or read that it cannot turn into readings.

    ``reason`` is a short, single-line explanation meant for dead-letter records and operator screens;
    it never contains the raw payload.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
