"""Identifiers the rest of the system builds topics, subjects and calendars from are checked at the API."""

from __future__ import annotations

import pytest

from tests.api.support import World, assert_problem


@pytest.mark.parametrize("ident", ["GW 1", "GW/1", "GW+1", "GW#1", "\U0010b796", "", "G" * 65])
def test_gateway_ident_must_be_a_topic_safe_id(world: World, ident: str) -> None:
    """A gateway id becomes an MQTT topic level: no spaces, wildcards, separators or exotic characters."""
    assert_problem(world.post("/gateways", {"ident": ident}), 422)


def test_gateway_ident_with_dots_and_dashes_is_fine(world: World) -> None:
    assert world.post("/gateways", {"ident": "GW-roof.1_a"}).status_code == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "ac.me", "name": "x"}, "slug"),  # a dot would split the bus subject readings.<tenant>
        ({"slug": "Acme", "name": "x"}, "slug"),
        ({"slug": "acme2", "name": "x", "timezone": "Mars/Olympus"}, "timezone"),
    ],
)
def test_tenant_slug_and_time_zone_are_checked(world: World, body: dict[str, str], field: str) -> None:
    problem = assert_problem(world.post("/tenants", body, as_user="root"), 422)
    assert field in str(problem["errors"])


def test_tenant_with_a_real_time_zone_is_created(world: World) -> None:
    response = world.post(
        "/tenants", {"slug": "nordic_1", "name": "Nordic", "timezone": "Europe/Oslo"}, as_user="root"
    )
    assert response.status_code == 201
    assert response.json()["timezone"] == "Europe/Oslo"
