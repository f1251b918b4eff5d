"""The API's OpenAPI document is a valid OpenAPI 3.1 document, and real responses of every
route (successes and errors, over real HTTP on a seeded database) validate against it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from support.dash import API_TOKEN  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


@pytest.fixture
def api(dashboard_factory: Any) -> Any:
    served = dashboard_factory()
    with httpx.Client(base_url=served.url, timeout=10) as client:
        yield client


def test_document_is_valid_openapi(api: httpx.Client) -> None:
    from openapi_spec_validator import validate

    validate(api.get("/api/openapi.json").json())


def _check(doc: dict[str, Any], resp: httpx.Response) -> None:
    from openapi_core import OpenAPI
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
    from requests import PreparedRequest, Response

    req = PreparedRequest()
    req.prepare(method=resp.request.method, url=str(resp.request.url),
                headers=dict(resp.request.headers), data=resp.request.content or None)  # fmt: skip
    raw = Response()
    raw.status_code, raw._content = resp.status_code, resp.content
    raw.headers.update(resp.headers)
    OpenAPI.from_dict(doc).validate_response(
        RequestsOpenAPIRequest(req), RequestsOpenAPIResponse(raw)
    )


def test_real_responses_validate_against_the_document(api: httpx.Client) -> None:
    doc = api.get("/api/openapi.json").json()
    doc["servers"] = [{"url": str(api.base_url).rstrip("/")}]
    calls = api.get("/api/calls", headers=AUTH)
    assert calls.status_code == 200 and calls.json()["total"] == 4
    alerts = api.get("/api/alerts", headers=AUTH)
    assert alerts.status_code == 200 and alerts.json()["items"]
    alert_id = alerts.json()["items"][0]["id"]
    checked = [
        calls,
        api.get("/api/calls", params={"queue": "billing", "sort": "anger_share", "limit": 2},
                headers=AUTH),  # fmt: skip
        api.get("/api/calls/c-angry", headers=AUTH),
        api.get("/api/calls/c-live", headers=AUTH),  # live: no end, no summary
        alerts,
        api.get("/api/live", headers=AUTH),
        api.get("/api/health", headers=AUTH),
        api.post(f"/api/alerts/{alert_id}/ack", json={"by": "lead-1"}, headers=AUTH),
        api.get("/api/webhooks/deliveries", headers=AUTH),
        # errors the document promises
        api.get("/api/calls"),  # 401
        api.get("/api/calls", params={"limit": "many"}, headers=AUTH),  # 400
        api.get("/api/calls/no-such-call", headers=AUTH),  # 404
    ]
    statuses = [r.status_code for r in checked]
    assert statuses == [200, 200, 200, 200, 200, 200, 200, 200, 200, 401, 400, 404], statuses
    for resp in checked:
        _check(doc, resp)


def test_operations_are_named_and_webhook_payloads_match_the_document(api: httpx.Client) -> None:
    from callsense.processors.alerts import AlertEvent
    from jsonschema import Draft202012Validator

    doc = api.get("/api/openapi.json").json()
    ops = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ops) == len(set(ops)) == 7
    hook = doc["webhooks"]["alertEvent"]["post"]
    assert {p["name"] for p in hook["parameters"]} == {"webhook-id", "webhook-timestamp",
                                                       "webhook-signature"}  # fmt: skip
    alert = api.get("/api/alerts", headers=AUTH).json()["items"][0]
    for kind in ("alert.raised", "alert.acknowledged"):
        payload = AlertEvent(event_id="e1", type=kind, alert=alert,
                             occurred_at="2026-12-01T09:00:00+00:00").payload()  # fmt: skip
        schema = {"$ref": "#/components/schemas/AlertWebhook", "components": doc["components"]}
        errors = list(Draft202012Validator(schema).iter_errors(payload))
        assert not errors, errors
    bad = {"type": "alert.exploded", "timestamp": "x", "data": alert}
    assert list(Draft202012Validator(schema).iter_errors(bad))
