"""Password hashing with Argon2id (argon2-cffi), the OWASP-recommended memory-hard hash.

``Passwords`` wraps one ``argon2.PasswordHasher`` so the cost parameters are chosen once (production
uses argon2-cffi's RFC 9106 low-memory defaults; tests pass a cheap hasher). ``verify_dummy`` burns the
same time as a real verification, so a login for an unknown user is not measurably faster than one with
a wrong password (no user enumeration by timing).
"""

from __future__ import annotations

from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from openami.security.errors import InvalidInput

MIN_PASSWORD_LENGTH = 10
#: Longer inputs are refused before hashing: they add no security and would let a request buy CPU.
MAX_PASSWORD_LENGTH = 1024


class Passwords:
    """Hash, verify and upgrade password hashes with one set of Argon2 parameters."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()

    def hash(self, password: str) -> str:
        """The encoded Argon2id hash of an acceptable password; InvalidInput when it is too weak."""
        check_password_policy(password)
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches; False for a mismatch or an unreadable stored hash."""
        if len(password) > MAX_PASSWORD_LENGTH:
            self.verify_dummy(password[:MAX_PASSWORD_LENGTH])
            return False
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the hash was made with other parameters than ours (rehash on next good login)."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    @cached_property
    def _dummy_hash(self) -> str:
        return self._hasher.hash("openami-dummy-password-for-timing")

    def verify_dummy(self, password: str) -> None:
        """Spend a verification's worth of time on nothing (unknown user, unknown tenant)."""
        self.verify(self._dummy_hash, password[:MAX_PASSWORD_LENGTH])


def check_password_policy(password: str) -> None:
    """Length is the policy (NIST SP 800-63B): at least MIN_PASSWORD_LENGTH, at most MAX_PASSWORD_LENGTH."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput(f"password must have at most {MAX_PASSWORD_LENGTH} characters")
