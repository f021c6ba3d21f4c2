"""Security failures, one class per answer the caller should get.

The API maps them centrally (``openami.api.problems``): AuthenticationFailed -> 401 with
``WWW-Authenticate: Bearer``, PermissionDenied -> 403, InvalidInput -> 422. Messages are safe to show:
they never say whether a user name exists or why exactly a token was refused.
"""

from __future__ import annotations


class SecurityError(Exception):
    """Base of every security failure."""


class AuthenticationFailed(SecurityError):
    """Wrong credentials, or a token that is unknown, expired, revoked or belongs to a disabled user."""


class PermissionDenied(SecurityError):
    """The principal is authenticated but its role lacks the permission."""


class InvalidInput(SecurityError):
    """A security-relevant value is unacceptable: unknown role, too weak a password, bad user setup."""
