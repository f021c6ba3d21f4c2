"""Health, metrics, and the OpenAPI document."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient

from openami import __version__
from openami.api.app import create_api
from openami.api.deps import ApiContext
from openami.config import Settings
from openami.security.service import AuthService
from openami.store.engine import make_engine

from .support import World, assert_problem


def test_health_ok_without_authentication(world: World) -> None:
    response = world.client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": __version__, "database": "ok"}


def test_health_is_503_when_the_database_is_down(tmp_path: Path) -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2")
    context = ApiContext(
        engine=engine,
        settings=Settings(data_dir=tmp_path),
        auth_service=AuthService(engine, token_ttl=timedelta(hours=1)),
        health=lambda: {"bus": "ok"},
    )
    with TestClient(create_api(context)) as client:
        response = client.get("/health")
        assert client.get("/metrics").status_code == 404  # no metrics_text, no route
        unavailable = client.get("/auth/me", headers={"Authorization": "Bearer some-token"})
    assert_problem(unavailable, 503)
    assert "nobody" not in unavailable.text  # nothing of the connection string leaks
    assert response.status_code == 503
    assert response.json() == {"status": "degraded", "version": __version__, "database": "error", "bus": "ok"}
    engine.dispose()


def test_health_reports_platform_parts(world: World) -> None:
    world.client.app.state.context = ApiContext(
        engine=world.context.engine,
        settings=world.context.settings,
        auth_service=world.auth,
        health=lambda: {"status": "degraded", "bus": "stopped"},
    )
    response = world.client.get("/health")
    assert response.status_code == 200  # reads still work without the bus
    assert response.json()["status"] == "degraded"
    assert response.json()["bus"] == "stopped"


def test_metrics_exposition_when_configured(world: World) -> None:
    response = world.client.get("/metrics")
    assert response.status_code == 200
    assert response.text == "openami_up 1\n"
    assert response.headers["content-type"].startswith("text/plain")


def test_openapi_lists_every_route_and_docs_load(world: World) -> None:
    document = world.client.get("/openapi.json").json()
    assert document["info"]["version"] == __version__
    paths = set(document["paths"])
    for resource in ("customers", "accounts", "service-points", "gateways", "meters"):
        assert {f"/{resource}", f"/{resource}/{{item_id}}"} <= paths
        assert {"get", "post"} <= set(document["paths"][f"/{resource}"])
        assert "patch" in document["paths"][f"/{resource}/{{item_id}}"]
    assert {
        "/health",
        "/auth/login",
        "/auth/logout",
        "/auth/me",
        "/tenants",
        "/tenants/{item_id}",
        "/meters/{item_id}/channels",
        "/meters/{item_id}/installations",
        "/channels/{item_id}",
        "/channels/{item_id}/readings",
        "/events",
    } <= paths
    assert "/metrics" not in paths
    schemes = document["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    docs = world.client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
