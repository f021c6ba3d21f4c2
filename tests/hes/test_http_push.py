"""``POST /uplinks``: a third-party gateway's account pushes JSON v1 uplinks into the store, once."""

from __future__ import annotations

import gzip
import json

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from openami.app import Platform
from openami.security.bootstrap import ensure_user
from openami.security.service import AuthService
from openami.store.schema import channel, comm_device, meter, register_read, tenant
from openami.web.server import build_web_app

PASSWORD = "a gateway's long password"
UPLINK = {
    "v": 1,
    "gateway": "GW-HTTP-1",
    "seq": 17,
    "meters": [
        {
            "id": "E-900001",
            "series": [
                {
                    "channel": "1-0:1.8.0",
                    "unit": "kWh",
                    "kind": "register",
                    "values": [["2026-11-22T09:45:00Z", 1234.5], ["2026-11-22T10:00:00Z", 1234.62]],
                }
            ],
            "events": [{"ts": "2026-11-22T09:50:00Z", "code": "cover_open", "severity": "alarm"}],
        }
    ],
}


def _world(platform: Platform) -> tuple[TestClient, dict[str, str]]:
    with platform.engine.begin() as conn:
        acme = conn.execute(
            insert(tenant).values(slug="acme", name="Acme").returning(tenant.c.id)
        ).scalar_one()
        conn.execute(insert(tenant).values(slug="beta", name="Beta"))
        conn.execute(insert(comm_device).values(tenant_id=acme, ident="GW-HTTP-1", kind="gateway"))
        conn.execute(
            insert(meter).values(
                tenant_id=acme, serial="E-900001", medium="electricity", protocol="mqtt-json"
            )
        )
    for slug, name, role in (
        ("acme", "gw1", "gateway"),
        ("acme", "olga", "operator"),
        ("beta", "gwb", "gateway"),
    ):
        ensure_user(platform.engine, slug, name, PASSWORD, role=role)
    auth = AuthService(platform.engine)
    tokens = {
        name: auth.authenticate(slug, name, PASSWORD).token
        for slug, name in (("acme", "gw1"), ("acme", "olga"), ("beta", "gwb"))
    }
    return TestClient(build_web_app(platform)), tokens


def _register_values(platform: Platform) -> list[float]:
    with platform.engine.connect() as conn:
        return [
            float(v)
            for v in conn.execute(
                select(register_read.c.value)
                .join(channel, channel.c.id == register_read.c.channel_id)
                .where(channel.c.code == "1-0:1.8.0")
                .order_by(register_read.c.ts)
            ).scalars()
        ]


async def test_a_pushed_uplink_is_stored_once(platform: Platform) -> None:
    client, tokens = _world(platform)
    headers = {"Authorization": f"Bearer {tokens['gw1']}", "Content-Type": "application/json"}
    body = json.dumps(UPLINK).encode()
    first = client.post("/uplinks", content=body, headers=headers)
    assert first.status_code == 202, first.text
    accepted = first.json()
    assert (accepted["gateway"], accepted["seq"], accepted["readings"], accepted["events"]) == (
        "GW-HTTP-1",
        17,
        2,
        1,
    )
    assert accepted["message_id"] == "mqtt-json:acme:GW-HTTP-1:17"
    again = client.post(
        "/uplinks", content=gzip.compress(body), headers={**headers, "Content-Encoding": "gzip"}
    )
    assert again.status_code == 202 and again.json()["message_id"] == first.json()["message_id"]
    await platform.settle()
    assert _register_values(platform) == [1234.5, 1234.62]  # the retry (gzip) stored nothing twice
    assert platform.ingest.totals.events == 1


async def test_refusals(platform: Platform) -> None:
    client, tokens = _world(platform)

    def post(token: str, body: bytes) -> tuple[int, str]:
        response = client.post("/uplinks", content=body, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.json().get("detail", "")

    assert post(tokens["olga"], json.dumps(UPLINK).encode())[0] == 403  # people do not push readings
    status, detail = post(tokens["gwb"], json.dumps(UPLINK).encode())  # another tenant's account
    assert status == 422 and "not a registered gateway" in detail
    status, detail = post(tokens["gw1"], b"{not json")
    assert status == 422 and "JSON" in detail
    status, detail = post(tokens["gw1"], json.dumps({**UPLINK, "v": 2}).encode())
    assert status == 422
    assert client.post("/uplinks", content=b"{}").status_code == 401
    await platform.settle()
    assert _register_values(platform) == []  # nothing stored by any refusal
