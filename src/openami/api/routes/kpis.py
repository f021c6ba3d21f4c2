"""Head-end KPIs (``kpis:read``): read success, latency and communication quality, from the job table.

Every endpoint takes ``from`` and ``to``, local dates (``2026-03-28``) in the tenant's time zone, both
included; by default the last 7 days up to today, at most 366. ``GET /kpis/reads?by=day|schedule|
gateway|model`` gives planned, done, failed, open and cancelled reads per group with the success rate
and ``meets_target`` against ``target`` (the 98 % of utility contracts), plus the period's total.
``GET /kpis/latency`` gives p50 / p95 / max seconds from slot (or request) to result per lane;
``GET /kpis/communication`` attempts per successful read, the retry rate, failed reads by error kind
and the dead meters (every read in the period failed). How each figure is counted:
``docs/operations/kpis.md``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from openami.api.crud import AUTH_RESPONSES
from openami.api.deps import Context, require
from openami.hes import kpi
from openami.security.service import Principal

router = APIRouter(prefix="/kpis", tags=["kpis"], responses=AUTH_RESPONSES)
Reader = Annotated[Principal, Depends(require("kpis:read"))]
First = Annotated[
    date | None, Query(alias="from", description="First local day (default: 6 days before to).")
]
Last = Annotated[date | None, Query(alias="to", description="Last local day, included (default: today).")]


def _period(context: Context, principal: Principal, first: date | None, last: date | None) -> kpi.Period:
    return kpi.period(context.engine, principal.tenant_id, first, last, now=datetime.now(UTC))


@router.get(
    "/reads", response_model=kpi.ReadSuccess, summary="Read success per day, schedule, gateway or model"
)
def reads(
    context: Context,
    principal: Reader,
    first: First = None,
    last: Last = None,
    by: kpi.Grouping = "day",
) -> Any:
    period = _period(context, principal, first, last)
    return kpi.read_success(context.engine, principal.tenant_id, period, by=by)


@router.get("/latency", response_model=kpi.Latency, summary="Read latency per lane")
def latency(context: Context, principal: Reader, first: First = None, last: Last = None) -> Any:
    return kpi.latency(context.engine, principal.tenant_id, _period(context, principal, first, last))


@router.get(
    "/communication",
    response_model=kpi.Communication,
    summary="Attempts, retries, error kinds and dead meters",
)
def communication(
    context: Context,
    principal: Reader,
    first: First = None,
    last: Last = None,
    dead_limit: Annotated[int, Query(ge=0, le=10_000, description="Dead meters listed at most.")] = 1000,
) -> Any:
    period = _period(context, principal, first, last)
    return kpi.communication(context.engine, principal.tenant_id, period, dead_limit=dead_limit)
