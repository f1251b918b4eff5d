"""JSON API over real HTTP on SQLite and PostgreSQL: auth, filters, paging, sorting, CSV,
hostile inputs (always 4xx, never a 500 or a leak), acknowledgement, UI sign-in."""

from __future__ import annotations

import csv
import io

import httpx
import pytest
from support.dash import API_TOKEN, PASSWORD, HookReceiver  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
LEAKS = ("traceback", "sqlalchemy", "psycopg", "sqlite", "select ", "syntax", 'file "')


@pytest.fixture
def api(dashboard_factory):
    served = dashboard_factory()
    with httpx.Client(base_url=served.url, timeout=10) as client:
        client.served = served  # type: ignore[attr-defined]
        yield client


def ids(resp: httpx.Response) -> list[str]:
    assert resp.status_code == 200, resp.text
    return [c["call_id"] for c in resp.json()["items"]]


def test_auth_is_enforced(api: httpx.Client) -> None:
    assert api.get("/api/calls").status_code == 401
    assert api.get("/api/calls", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/calls", headers={"Authorization": API_TOKEN}).status_code == 401
    assert api.get("/api/calls", headers={"Authorization": f"Basic {API_TOKEN}"}).status_code == 401
    assert api.get("/api/calls/c-live").status_code == 401
    assert api.get("/api/alerts").status_code == 401
    assert api.post("/api/alerts/al_test1/ack", json={"by": "x"}).status_code == 401
    r = api.get("/api/calls", headers=AUTH)
    assert r.status_code == 200 and r.json()["total"] == 4
    doc = api.get("/api/openapi.json").json()  # the document itself is public
    assert doc["openapi"].startswith("3.")
    assert {"/api/calls", "/api/calls/{call_id}", "/api/alerts"} <= set(doc["paths"])
    names = {p["name"] for p in doc["paths"]["/api/calls"]["get"]["parameters"]}
    assert {
        "agent",
        "customer",
        "queue",
        "min_anger_share",
        "alerted",
        "started_from",
        "min_duration_s",
        "min_long_silences",
        "min_overtalk_share",
        "sort",
        "limit",
        "offset",
        "format",
    } <= names


def test_api_disabled_without_configured_token(dashboard_factory) -> None:
    served = dashboard_factory(api_token=None)
    r = httpx.get(served.url + "/api/calls", headers={"Authorization": "Bearer x"})
    assert r.status_code == 503 and "CALLSENSE_API_TOKEN" in r.json()["error"]


def test_filters(api: httpx.Client) -> None:
    def q(**params: object) -> list[str]:
        return sorted(ids(api.get("/api/calls", params=params, headers=AUTH)))

    assert q(agent="A1") == ["c-angry", "c-live"]
    assert q(customer="K1") == ["c-angry", "c-old"]
    assert q(queue="support", min_duration_s=100) == ["c-old"]
    assert q(max_duration_s=100) == ["c-calm", "c-live"]  # c-live: windows end at 13 s
    assert q(alerted="true") == ["c-angry"]
    assert q(alerted="false") == ["c-calm", "c-live", "c-old"]
    # c-live has no summary yet: 6 of its 10 confident customer windows are angry -> 0.6
    assert q(min_anger_share=0.6) == ["c-angry", "c-live"]
    assert q(min_anger_share=0.65) == ["c-angry"]
    assert q(started_from="2026-01-01") == ["c-angry", "c-calm", "c-live"]
    assert q(started_from="2026-11-20T09:30:00+00:00", started_to="2026-11-21") == ["c-calm"]
    assert q(status="active") == ["c-live"]
    assert q(agent="nobody") == []
    # conversation metrics of ended calls (c-angry: one 5 s silence, 10 s of 120 overtalk)
    assert q(min_long_silences=1) == ["c-angry"] and q(min_long_silences=2) == []
    assert q(min_overtalk_share=0.08) == ["c-angry"] and q(min_overtalk_share=0.09) == []


def test_max_duration_uses_window_end_for_live_calls(api: httpx.Client) -> None:
    r = api.get("/api/calls", params={"status": "active"}, headers=AUTH).json()
    assert r["items"][0]["duration_s"] == 13.0  # last window ends at 13 s
    assert r["items"][0]["anger_share"] == 0.6


def test_sorting_paging_and_csv(api: httpx.Client) -> None:
    by_dur = ids(api.get("/api/calls", params={"sort": "duration_s", "order": "asc"}, headers=AUTH))
    assert by_dur == ["c-live", "c-calm", "c-angry", "c-old"]
    newest = ids(api.get("/api/calls", headers=AUTH))
    assert newest == ["c-live", "c-calm", "c-angry", "c-old"]  # started_at desc by default
    page2 = api.get("/api/calls", params={"limit": 2, "offset": 2}, headers=AUTH).json()
    assert page2["total"] == 4 and [c["call_id"] for c in page2["items"]] == ["c-angry", "c-old"]
    r = api.get("/api/calls", params={"format": "csv", "queue": "billing"}, headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert sorted(row["call_id"] for row in rows) == ["c-angry", "c-live"]
    assert {row["alerts"] for row in rows} == {"0", "1"}


def test_call_detail_matches_its_schema_with_conversation_metrics(api: httpx.Client) -> None:
    import jsonschema

    doc = api.get("/api/openapi.json").json()
    schema = {"components": doc["components"], **doc["components"]["schemas"]["CallDetail"]}
    ended = api.get("/api/calls/c-angry", headers=AUTH).json()
    jsonschema.validate(ended, schema)
    conv = ended["summary"]["conversation"]
    assert conv["long_silences"] == 1 and conv["overtalk_s"] == 10.0
    assert conv["speakers"]["ch1"]["interruptions"] == 1
    live = api.get("/api/calls/c-live", headers=AUTH).json()
    jsonschema.validate(live, schema)
    assert live["summary"] is None
    with pytest.raises(jsonschema.ValidationError):  # the schema does hold the metrics to types
        conv["speakers"]["ch1"]["turns"] = "two"
        jsonschema.validate(ended, schema)


def test_call_detail_and_alerts(api: httpx.Client) -> None:
    d = api.get("/api/calls/c-live", headers=AUTH).json()
    assert d["agent_id"] == "A1" and d["status"] == "active"
    assert len(d["windows"]) == 21
    assert {s["role"] for s in d["speakers"]} == {"agent", "customer"}
    assert sum(w["uncertain"] for w in d["windows"]) == 1
    assert api.get("/api/calls/does-not-exist", headers=AUTH).status_code == 404
    a = api.get("/api/alerts", params={"status": "open"}, headers=AUTH).json()
    assert [x["id"] for x in a["items"]] == ["al_test1"]
    assert api.get("/api/alerts", params={"status": "resolved"}, headers=AUTH).json()["total"] == 0
    assert api.get("/api/alerts", params={"call_id": "c-calm"}, headers=AUTH).json()["total"] == 0


def test_acknowledge_via_api(api: httpx.Client) -> None:
    long_note = {"by": "sam", "note": "x" * 501}
    assert api.post("/api/alerts/al_test1/ack", json=long_note, headers=AUTH).status_code == 400
    r = api.post("/api/alerts/al_test1/ack", json={"by": "sam", "note": "rang back"}, headers=AUTH)
    assert r.status_code == 200 and r.json()["acknowledged"] is True
    assert r.json()["alert"]["acknowledged_by"] == "sam"
    assert r.json()["alert"]["acknowledged_note"] == "rang back"
    again = api.post("/api/alerts/al_test1/ack", json={"by": "kim"}, headers=AUTH).json()
    assert again["acknowledged"] is False and again["alert"]["acknowledged_by"] == "sam"
    assert api.post("/api/alerts/al_nope/ack", json={"by": "x"}, headers=AUTH).status_code == 404
    assert (
        api.post("/api/alerts/al_test1/ack", json={"by": "'; --"}, headers=AUTH).status_code == 400
    )
    acked = api.get("/api/alerts", params={"acknowledged": "true"}, headers=AUTH).json()
    assert acked["total"] == 1


HOSTILE = [
    "agent=' OR '1'='1",
    'customer="quoted"',
    "queue=billing'; DROP TABLE calls; --",
    "agent=A1 UNION SELECT * FROM alerts",
    "limit=1000000000000000000000000000000",
    "limit=-1",
    "limit=0",
    "offset=99999999999999999999",
    "min_duration_s=1e400",
    "min_anger_share=nan",
    "min_anger_share=2",
    "max_duration_s=-5",
    "started_from=2026-13-45",
    "started_from=not-a-date",
    "started_from=0001-01-01",
    "started_to=9999-12-31T23:59:59",
    "started_from=2026-01-01'; SELECT 1",
    "sort=call_id; DROP TABLE calls",
    "sort=password",
    "order=sideways",
    "alerted=maybe",
    "status=active' OR 1=1",
    "format=xml",
    "unknown=1",
    "limit=1&limit=2",
    "agent=" + "A" * 300,
    "agent=%00",
]


HOSTILE_PATHS = [
    "/api/alerts?status=everything",
    "/api/alerts?raised_from=yesterday",
    "/api/alerts?limit=1e9",
    "/api/alerts?call_id=x'--",
    "/api/alerts?rule=DROP%20TABLE",
    "/api/calls/x'%20OR%201=1",
    "/api/calls/" + "c" * 500,
    "/api/calls/c-live?extra=1",
]


def test_hostile_inputs_get_4xx_without_leaks_and_change_nothing(api: httpx.Client) -> None:
    bad = []
    paths = ["/api/calls?" + q for q in HOSTILE] + HOSTILE_PATHS
    for path in paths:
        r = api.get(path, headers=AUTH)
        body = r.text.lower()
        if not 400 <= r.status_code < 500 or any(leak in body for leak in LEAKS):
            bad.append((path, r.status_code, r.text[:200]))
        if r.status_code == 400:
            assert "error" in r.json()
    r = api.post("/api/alerts/bad'id/ack", json={"by": "x"}, headers=AUTH)
    if r.status_code != 400:
        bad.append(("ack bad id", r.status_code, r.text[:200]))
    r = api.post("/api/alerts/al_test1/ack", content=b"{not json", headers=AUTH)
    if r.status_code != 400:
        bad.append(("ack bad body", r.status_code, r.text[:200]))
    assert bad == [], f"{len(bad)} of {len(paths) + 2} hostile requests mishandled"
    # nothing was dropped or changed by the injection attempts
    assert api.get("/api/calls", headers=AUTH).json()["total"] == 4
    assert (
        api.get("/api/alerts", params={"acknowledged": "true"}, headers=AUTH).json()["total"] == 0
    )


def test_400_names_the_offending_parameter(api: httpx.Client) -> None:
    r = api.get("/api/calls", params={"started_from": "2026-13-45"}, headers=AUTH)
    assert r.status_code == 400 and "started_from" in r.json()["error"]
    r = api.get("/api/calls", params={"limit": "10000"}, headers=AUTH)
    assert r.status_code == 400 and "limit" in r.json()["error"]


def test_sign_in_required_beyond_loopback(dashboard_factory) -> None:
    served = dashboard_factory(require_login=True)
    with httpx.Client(base_url=served.url, follow_redirects=False) as c:
        r = c.get("/history")
        assert r.status_code == 302 and r.headers["location"].startswith("/login")
        assert c.get("/_dash-layout").status_code == 401
        assert c.get("/export/calls.csv").status_code == 401
        bad = c.post("/login", data={"user": "supervisor", "password": "nope"})
        assert bad.status_code == 200 and "wrong user or password" in bad.text
        ok = c.post("/login?next=%2Fhistory", data={"user": "supervisor", "password": PASSWORD})
        assert ok.status_code == 302 and ok.headers["location"] == "/history"
        assert c.get("/history").status_code == 200
        assert c.get("/_dash-layout").status_code == 200
        assert c.get("/export/calls.csv").text.startswith("call_id,")
        for evil_next in ("//evil.example", "/%09/evil.example", "/%5Cevil.example",
                          "https://evil.example", "/%0a/evil.example"):  # fmt: skip
            evil = c.post(
                f"/login?next={evil_next}", data={"user": "supervisor", "password": PASSWORD}
            )
            assert evil.headers["location"] == "/", evil_next
        c.get("/logout")
        assert c.get("/history").status_code == 302
    with httpx.Client(base_url=served.url) as c2:  # pages take the session only, not tokens
        assert c2.get("/_dash-layout", headers=AUTH).status_code == 401
        basic = {"Authorization": f"Basic {API_TOKEN}"}
        assert c2.get("/_dash-layout", headers=basic).status_code == 401
        ok = c2.post("/login", data={"user": "anyone", "password": API_TOKEN})  # token signs in
        assert ok.status_code == 302 and c2.get("/_dash-layout").status_code == 200


def test_sign_in_locks_out_after_repeated_failures(dashboard_factory) -> None:
    served = dashboard_factory(require_login=True)
    with httpx.Client(base_url=served.url, follow_redirects=False) as c:
        for _ in range(5):
            assert c.post("/login", data={"user": "supervisor", "password": "x"}).status_code == 200
        locked = c.post("/login", data={"user": "supervisor", "password": PASSWORD})
        assert locked.status_code == 429 and "too many failed sign-ins" in locked.text
        assert int(locked.headers["Retry-After"]) > 0
        assert c.get("/history").status_code == 302  # still signed out


def test_every_response_carries_security_headers(dashboard_factory) -> None:
    served = dashboard_factory()
    for path in ("/", "/login", "/api/openapi.json", "/_dash-layout"):
        h = httpx.get(served.url + path).headers
        assert "frame-ancestors 'none'" in h["content-security-policy"], path
        assert h["x-frame-options"] == "DENY" and h["x-content-type-options"] == "nosniff"
        assert h["referrer-policy"] == "same-origin"


def test_loopback_needs_no_sign_in_and_beyond_needs_a_secret(dashboard_factory) -> None:
    served = dashboard_factory()
    assert httpx.get(served.url + "/_dash-layout").status_code == 200
    with pytest.raises(ValueError, match="CALLSENSE_DASHBOARD_PASSWORD"):
        dashboard_factory(
            require_login=True, seed_data=False, dashboard_password=None, api_token=None
        )


def test_acknowledgement_is_delivered_as_a_signed_webhook(dashboard_factory) -> None:
    import base64
    import time

    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    recv = HookReceiver(secret)
    try:
        served = dashboard_factory(webhook_url=recv.url + "#type=acknowledged",
                                   webhook_secret=secret)  # fmt: skip
        r = httpx.post(served.url + "/api/alerts/al_test1/ack", json={"by": "sam"}, headers=AUTH)
        assert r.status_code == 200 and r.json()["acknowledged"]
        deadline = time.monotonic() + 10
        while not recv.got and time.monotonic() < deadline:
            time.sleep(0.05)
        httpx.post(served.url + "/api/alerts/al_test1/ack", json={"by": "kim"}, headers=AUTH)
        time.sleep(0.3)
        # the delivery state is in the API too, in the shape the OpenAPI document gives
        attempts = httpx.get(served.url + "/api/webhooks/deliveries?alert_id=al_test1",
                             headers=AUTH).json()  # fmt: skip
        failed = httpx.get(served.url + "/api/webhooks/deliveries?ok=false", headers=AUTH).json()
        doc = httpx.get(served.url + "/api/openapi.json").json()
        bad = httpx.get(served.url + "/api/webhooks/deliveries?limit=0", headers=AUTH)
        anonymous = httpx.get(served.url + "/api/webhooks/deliveries")
    finally:
        recv.close()
    import jsonschema

    page = {**doc["components"]["schemas"]["DeliveryPage"], "components": doc["components"]}
    jsonschema.validate(attempts, page)
    got = [(a["attempt"], a["ok"], a["status_code"]) for a in attempts["items"]]
    assert got == [(1, True, 200)], got
    assert attempts["items"][0]["url"].startswith(recv.url)
    assert failed["total"] == 0 and bad.status_code == 400 and anonymous.status_code == 401
    assert len(recv.got) == 1  # the second acknowledgement changed nothing and sent nothing
    msg_id, body = recv.got[0]
    assert msg_id.startswith("msg_") and body["type"] == "alert.acknowledged"
    assert body["data"]["id"] == "al_test1" and body["data"]["acknowledged_by"] == "sam"


def test_unknown_paths_are_404_and_do_not_pass_the_gate(dashboard_factory) -> None:
    served = dashboard_factory(require_login=True)
    with httpx.Client(base_url=served.url, follow_redirects=False) as c:
        assert c.get("/loginx").status_code == 302  # not the sign-in page: gated
        assert c.get("/login").status_code == 200
        ok = c.post("/login", data={"user": "supervisor", "password": PASSWORD})
        assert ok.status_code == 302
        for path in ("/loginx", "/nope", "/history/x", "/call/bad id"):
            assert c.get(path).status_code == 404, path
        nope = c.get("/api/nope", headers=AUTH)
        assert nope.status_code == 404 and nope.json() == {"error": "not found"}
        for path in ("/", "/history", "/upload", "/webhooks", "/call/c-1", "/_dash-layout"):
            assert c.get(path).status_code == 200, path


def test_live_returns_the_ranked_calls_matching_its_schema(api: httpx.Client) -> None:
    import jsonschema

    doc = api.get("/api/openapi.json").json()
    r = api.get("/api/live", headers=AUTH)
    assert r.status_code == 200
    body = r.json()
    assert body["total"] == len(body["items"]) >= 1
    schema = {**doc["components"]["schemas"]["LivePage"], "components": doc["components"]}
    resolver_doc = {"components": doc["components"], **schema}
    jsonschema.validate(body, resolver_doc)
    ranks = [c["attention"] for c in body["items"]]
    assert ranks == sorted(ranks, reverse=True)
    assert api.get("/api/live").status_code == 401
    assert api.get("/api/live?x=1", headers=AUTH).status_code == 400


def test_health_says_down_until_a_worker_beats(dashboard_factory) -> None:
    from datetime import UTC, datetime

    from callsense.storage.health import beat

    served = dashboard_factory()
    r = httpx.get(served.url + "/api/health", headers=AUTH)
    assert r.status_code == 200 and r.json()["up"] is False
    with served.sf.begin() as s:
        beat(s, "w:1", datetime.now(UTC), live_calls=2, audio_partitions=4, audio_lag=7)
    body = httpx.get(served.url + "/api/health", headers=AUTH).json()
    assert body["up"] and body["workers"][0]["audio_lag"] == 7


def test_id_filters_are_case_insensitive_parts(api: httpx.Client) -> None:
    def q(**params: str) -> list[str]:
        return sorted(ids(api.get("/api/calls", params=params, headers=AUTH)))

    assert q(queue="BILL") == q(queue="billing") == ["c-angry", "c-live"]
    assert q(agent="a") == ["c-angry", "c-calm", "c-live", "c-old"]
    assert q(customer="k1") == ["c-angry", "c-old"]
    assert q(queue="bill_ng") == []  # "_" is a literal, not a wildcard


def test_a_resolved_alert_cannot_be_acknowledged(api: httpx.Client) -> None:
    from callsense.storage.alerts import apply_alert_event

    served = api.served  # type: ignore[attr-defined]
    with served.sf.begin() as s:
        apply_alert_event(s, "alert.resolved", {
            "id": "al_test1", "call_id": "c-angry", "rule": "customer_anger", "speaker": "ch1",
            "role": "customer", "status": "resolved", "severity": "warning",
            "message": "customer calm again", "raised_at": "2026-11-20T09:01:00+00:00",
            "resolved_at": "2026-11-20T09:01:30+00:00"})  # fmt: skip
    r = api.post("/api/alerts/al_test1/ack", json={"by": "sam"}, headers=AUTH).json()
    assert r["acknowledged"] is False and r["alert"]["status"] == "resolved"
    assert r["alert"]["acknowledged_by"] is None
