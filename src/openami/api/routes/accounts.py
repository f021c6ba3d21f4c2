"""Accounts: what is billed, owned by a customer (``accounts:read|write``)."""

from __future__ import annotations

from openami.api.crud import Resource, resource_router
from openami.api.schemas import AccountIn, AccountQuery
from openami.store.repositories import Account, accounts

ACCOUNTS = Resource(
    path="/accounts",
    name="account",
    permission="accounts",
    repository=accounts,
    row_type=Account,
    query_model=AccountQuery,
    create_model=AccountIn,
)

router = resource_router(ACCOUNTS)
