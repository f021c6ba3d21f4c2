"""The REST API application factory.

``create_api(context)`` builds a FastAPI app around an ``ApiContext`` (see ``openami.api.deps``) and
nothing else: no globals, no import-time side effects, so tests and the platform each build their own.
Conventions (authentication, pagination, problem+json, time zones) are described in ``docs/api.md``.
"""

from __future__ import annotations

from fastapi import FastAPI

from openami import __version__
from openami.api.deps import ApiContext
from openami.api.middleware import BodySizeLimitMiddleware, SecurityHeadersMiddleware
from openami.api.problems import document_problems, install_problem_handlers
from openami.api.routes import (
    accounts,
    auth,
    campaigns,
    channels,
    commands,
    customers,
    events,
    gateways,
    health,
    jobs,
    kpis,
    meters,
    readings,
    schedules,
    service_points,
    tenants,
    uplinks,
)

#: Largest request body accepted (413 problem beyond); the API takes small JSON documents only.
MAX_BODY_BYTES = 1024 * 1024


def create_api(services: ApiContext) -> FastAPI:
    """The API app; ``/metrics`` exists only when ``services.metrics_text`` is set."""
    app = FastAPI(
        title="OpenAMI API",
        version=__version__,
        summary="Advanced Metering Infrastructure: meters, readings, customers and accounts.",
        description="Conventions (authentication, pagination, errors, time zones): see docs/api.md.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.context = services
    install_problem_handlers(app)
    document_problems(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(SecurityHeadersMiddleware)  # added last = outermost: also marks the 413s
    for module in (health, auth, tenants, customers, accounts, service_points, gateways, meters, channels):
        app.include_router(module.router)
    app.include_router(readings.router)
    app.include_router(events.router)
    app.include_router(commands.router)
    app.include_router(campaigns.router)
    app.include_router(uplinks.router)
    app.include_router(jobs.router)
    app.include_router(schedules.router)
    app.include_router(kpis.router)
    if services.metrics_text is not None:
        app.include_router(health.metrics_router)
    return app
