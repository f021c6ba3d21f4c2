"""``POST /uplinks``: third-party gateways push their JSON v1 uplinks over HTTP (``uplinks:write``).

Thin: read the body, hand it to :class:`openami.hes.http_push.UplinkPushService`, answer 202 with what
was accepted. A body that is not a valid uplink is a 422 problem (the same reason the MQTT listener
would give), a gateway the tenant does not have a 422, and an overlong body a 413 (middleware).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from openami.api.crud import AUTH_RESPONSES
from openami.api.deps import Context, require
from openami.api.problems import Problem
from openami.drivers.mqtt_json.codec import GatewayPayloadError
from openami.hes.http_push import UnknownGatewayError
from openami.security.service import Principal

router = APIRouter(tags=["uplinks"], responses=AUTH_RESPONSES)
Pusher = Annotated[Principal, Depends(require("uplinks:write"))]


class UplinkAccepted(BaseModel):
    gateway: str
    seq: int | None
    readings: int
    events: int
    message_id: str
    """The bus de-duplication id: a retry with the same sequence number (or content) is stored once."""


@router.post(
    "/uplinks",
    status_code=202,
    response_model=UplinkAccepted,
    responses={422: {"description": "Not a valid uplink, or a gateway the tenant does not have."}},
    summary="Push one gateway uplink (JSON format v1, gzip allowed)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
            "description": "An uplink in the JSON format v1 (docs/drivers/mqtt-json.md).",
        }
    },
)
async def push_uplink(context: Context, principal: Pusher, request: Request) -> Any:
    service = context.uplinks
    if service is None:
        raise Problem(503, "uplink push is not available in this process")
    payload = await request.body()
    try:
        result = await service.push(principal.tenant_id, principal.tenant_slug, payload)
    except GatewayPayloadError as exc:
        raise Problem(422, exc.reason) from None
    except UnknownGatewayError as exc:
        raise Problem(422, str(exc)) from None
    return UplinkAccepted(
        gateway=result.gateway,
        seq=result.seq,
        readings=result.readings,
        events=result.events,
        message_id=result.message_id,
    )
