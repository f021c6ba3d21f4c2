"""Customers: the people and companies that hold accounts (``customers:read|write``)."""

from __future__ import annotations

from openami.api.crud import Resource, resource_router
from openami.api.schemas import CustomerIn, CustomerQuery
from openami.store.repositories import Customer, customers

CUSTOMERS = Resource(
    path="/customers",
    name="customer",
    permission="customers",
    repository=customers,
    row_type=Customer,
    query_model=CustomerQuery,
    create_model=CustomerIn,
)

router = resource_router(CUSTOMERS)
