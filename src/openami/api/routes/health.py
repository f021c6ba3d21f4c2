"""Unauthenticated operational endpoints: GET /health and, when the platform has metrics, GET /metrics.

/health is for load balancers and orchestrators: 200 while the database answers, 503 with status
"degraded" when it does not (an API without its database can serve nothing). Other parts reported by the
platform (bus, MQTT) are included; if one says it is not "ok" the status reads "degraded" but the answer
stays 200, since reads still work.

/metrics is the Prometheus text exposition. It has no authentication because scrapers do not log in:
expose it only on the internal network (bind the API to an internal address or block /metrics at the
reverse proxy). It reveals counters, never data.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from openami import __version__
from openami.api.deps import Context
from openami.store.repositories import ping

log = logging.getLogger(__name__)

router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness and database reachability (no authentication)")
def health(context: Context) -> JSONResponse:
    database_ok = ping(context.engine)
    try:
        parts: dict[str, Any] = context.health()
    except Exception:  # the health check must report, not fail
        log.exception("platform health callback failed")
        parts = {"platform": "error"}
    healthy_parts = parts.get("status", "ok") == "ok" and "error" not in parts.values()
    body = {
        **parts,
        "status": "ok" if database_ok and healthy_parts else "degraded",
        "version": __version__,
        "database": "ok" if database_ok else "error",
    }
    return JSONResponse(body, status_code=200 if database_ok else 503)


metrics_router = APIRouter(tags=["operations"])


@metrics_router.get("/metrics", include_in_schema=False)
def metrics(context: Context) -> Response:
    assert context.metrics_text is not None  # the router is only mounted when it is set
    body, content_type = context.metrics_text()
    return Response(body, media_type=content_type)
