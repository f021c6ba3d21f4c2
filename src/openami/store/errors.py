"""Domain errors of the store, one class per thing a caller can do something about.

The API maps each class to one HTTP status centrally (``openami.api.problems``), so repositories raise
these instead of leaking driver exceptions. ``StoreError`` itself lives in ``openami.store.engine`` (the
engine module predates this one) and is re-exported here so callers need only one import.
"""

from __future__ import annotations

from openami.store.engine import StoreError, UnsupportedDatabase


class NotFound(StoreError):
    """No row with that id or natural key exists *in the caller's tenant* (other tenants look absent)."""


class Conflict(StoreError):
    """The write would duplicate a natural key (serial, number, code, ...) or contradict stored data."""


class InvalidReference(StoreError):
    """The write refers to a row that does not exist in the caller's tenant, or breaks a constraint."""


__all__ = ["Conflict", "InvalidReference", "NotFound", "StoreError", "UnsupportedDatabase"]
