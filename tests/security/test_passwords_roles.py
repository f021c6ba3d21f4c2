"""Password hashing and the role matrix (including that docs/security.md shows the matrix as it is)."""

from __future__ import annotations

from pathlib import Path

import pytest
from argon2 import PasswordHasher

from openami.security.errors import InvalidInput
from openami.security.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, Passwords
from openami.security.roles import (
    PERMISSIONS,
    PLATFORM_ADMIN_PERMISSIONS,
    ROLES,
    get_role,
    permission_matrix_markdown,
    permissions_for,
)

CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_hash_verify_and_rehash() -> None:
    passwords = Passwords(CHEAP)
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert "correct horse" not in stored
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse battery ")
    assert not passwords.verify("not-a-hash", "correct horse battery")
    assert not passwords.verify(stored, "x" * (MAX_PASSWORD_LENGTH + 1))
    assert not passwords.needs_rehash(stored)
    stronger = Passwords(PasswordHasher(time_cost=2, memory_cost=2048, parallelism=1))
    assert stronger.needs_rehash(stored)  # upgraded at the next good login
    assert stronger.verify(stored, "correct horse battery")  # old hashes still verify
    assert stronger.needs_rehash("garbage")


def test_password_policy_is_length() -> None:
    passwords = Passwords(CHEAP)
    with pytest.raises(InvalidInput):
        passwords.hash("x" * (MIN_PASSWORD_LENGTH - 1))
    with pytest.raises(InvalidInput):
        passwords.hash("x" * (MAX_PASSWORD_LENGTH + 1))
    assert passwords.verify(passwords.hash("ünïcödé 密码 🔑🔑"), "ünïcödé 密码 🔑🔑")


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=1024, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(str(hash))
        return super().verify(hash, password)


def test_dummy_verification_does_the_same_work() -> None:
    hasher = CountingHasher()
    passwords = Passwords(hasher)
    passwords.verify_dummy("whatever")
    passwords.verify_dummy("x" * 10_000)
    assert len(hasher.verified) == 2  # a real Argon2 verification each time, with our parameters
    assert hasher.verified[0].startswith("$argon2id$v=19$m=1024,t=1,p=1$")


def test_roles_are_well_formed() -> None:
    assert set(ROLES) == {
        "admin",
        "operator",
        "billing",
        "field_technician",
        "analyst",
        "customer",
        "gateway",
        "auditor",
    }
    for role in ROLES.values():
        assert role.permissions <= PERMISSIONS, role.name
        assert "tenants:write" not in role.permissions, role.name  # platform admins only
    assert [r.name for r in ROLES.values() if r.own_customer_only] == ["customer"]
    assert not any(p.endswith(":write") for p in ROLES["auditor"].permissions)
    assert not any(p.endswith(":write") for p in ROLES["analyst"].permissions)
    assert "audit:read" in ROLES["auditor"].permissions
    assert ROLES["gateway"].permissions == {"uplinks:write"}  # a machine account pushes, sees nothing
    assert ROLES["admin"].permissions == PERMISSIONS - {"tenants:write"}
    assert permissions_for("admin", is_platform_admin=True) == PERMISSIONS
    assert permissions_for("analyst", is_platform_admin=True) >= PLATFORM_ADMIN_PERMISSIONS
    with pytest.raises(InvalidInput, match="unknown role"):
        get_role("root")
    with pytest.raises(TypeError):
        ROLES["admin"] = ROLES["analyst"]  # type: ignore[index]


def test_docs_show_the_matrix_as_it_is() -> None:
    assert permission_matrix_markdown() in DOCS.read_text(encoding="utf-8"), (
        "docs/security.md is out of date: paste openami.security.roles.permission_matrix_markdown() into it"
    )
