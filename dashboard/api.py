"""JSON API on the dashboard's Flask server: ``/api/calls``, ``/api/calls/<id>``,
``/api/alerts``, ``/api/alerts/<id>/ack`` and the OpenAPI document ``/api/openapi.json``.

Every route but the OpenAPI document requires ``Authorization: Bearer $CALLSENSE_API_TOKEN``
(401 otherwise; 503 when no token is configured). Query parameters are validated by the same
pydantic models the history page uses; anything malformed is a 400 with the offending
parameter named, never a 500. Unexpected errors return a generic 500 body (details go to the
server log only).
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable
from typing import Any

from callsense.processors.alerts import EVENT_TYPES
from flask import Blueprint, Flask, Response, current_app, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from callsense.storage.alerts import ACK_NOTE_MAX
from callsense.storage.search import (
    ID_PATTERN,
    AlertQuery,
    CallQuery,
    DeliveryQuery,
    call_detail,
    calls_csv,
    search_alerts,
    search_calls,
    search_deliveries,
)

log = logging.getLogger(__name__)
_ID_RE = re.compile(ID_PATTERN)
_ALERT_ID_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _error(status: int, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **extra}), status


def parse_query(model: type[BaseModel], args: Any) -> BaseModel:
    """Validate request args against ``model``; raise ``ValueError`` with a safe message."""
    data: dict[str, Any] = {}
    for key, values in args.lists():
        if len(values) != 1:
            raise ValueError(f"parameter {key!r} given {len(values)} times")
        if len(values[0]) > 256:
            raise ValueError(f"parameter {key!r} is too long")
        data[key] = values[0]
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc']) or 'query'}: {e['msg']}" for e in exc.errors()
        ]
        raise ValueError("; ".join(problems)) from None


def make_api(
    session_factory: Callable[[], Any],
    token_getter: Callable[[], str | None],
    on_ack: Callable[[dict[str, Any]], None] | None = None,
) -> Blueprint:
    bp = Blueprint("callsense_api", __name__, url_prefix="/api")

    @bp.before_request
    def _auth() -> Any:
        if request.endpoint == "callsense_api.openapi":
            return None
        token = token_getter()
        if not token:
            return _error(503, "API disabled: CALLSENSE_API_TOKEN is not set")
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            resp, code = _error(401, "missing or invalid bearer token")
            resp.headers["WWW-Authenticate"] = 'Bearer realm="callsense"'
            return resp, code
        return None

    @bp.get("/calls")
    def calls() -> Any:
        args = request.args.copy()
        fmt = args.pop("format", "json")
        if fmt not in ("json", "csv"):
            return _error(400, "format must be json or csv")
        try:
            q = parse_query(CallQuery, args)
        except ValueError as exc:
            return _error(400, str(exc))
        with session_factory() as s:
            if fmt == "csv":
                return Response(
                    calls_csv(s, q),
                    mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=calls.csv"},
                )
            return jsonify(search_calls(s, q))

    @bp.get("/calls/<path:call_id>")
    def call(call_id: str) -> Any:
        if not _ID_RE.match(call_id):
            return _error(400, "malformed call id")
        if request.args:
            return _error(400, "this route takes no query parameters")
        with session_factory() as s:
            detail = call_detail(s, call_id)
        if detail is None:
            return _error(404, "no such call")
        return jsonify(detail)

    @bp.get("/health")
    def health() -> Any:
        from callsense.storage.health import pipeline_health

        with session_factory() as s:
            return jsonify(pipeline_health(s))

    @bp.get("/live")
    def live() -> Any:
        if request.args:
            return _error(400, "this route takes no query parameters")
        from callsense.dashboard.data import live_overview

        with session_factory() as s:
            calls = live_overview(s)
        items = [
            {
                "call_id": c["call_id"],
                "status": c["status"],
                "attention": c["attention"],
                "agent_id": c["agent_id"],
                "customer_id": c["customer_id"],
                "queue": c["queue"],
                "call_time_s": c["call_time_s"],
                "open_alerts": len(c["alerts"]),
                "max_severity": _max_severity(c["alerts"]),
                "speakers": [
                    {k: sp.get(k) for k in ("speaker", "role", "label", "confidence", "uncertain")}
                    | {"anger": sp["anger"][-1] if sp.get("anger") else None}
                    for sp in c["speakers"]
                ],
            }
            for c in calls
        ]
        return jsonify({"total": len(items), "items": items})

    def _search(model: type[BaseModel], search: Callable[[Any, Any], Any]) -> Any:
        try:
            q = parse_query(model, request.args)
        except ValueError as exc:
            return _error(400, str(exc))
        with session_factory() as s:
            return jsonify(search(s, q))

    @bp.get("/alerts")
    def alerts() -> Any:
        return _search(AlertQuery, search_alerts)

    @bp.get("/webhooks/deliveries")
    def deliveries() -> Any:
        return _search(DeliveryQuery, search_deliveries)

    @bp.post("/alerts/<alert_id>/ack")
    def ack(alert_id: str) -> Any:
        from callsense.storage.alerts import acknowledge, alert_to_dict
        from callsense.storage.schema import Alert

        if not _ALERT_ID_RE.match(alert_id):
            return _error(400, "malformed alert id")
        body = request.get_json(silent=True)
        by = body.get("by") if isinstance(body, dict) else None
        if not isinstance(by, str) or not _ID_RE.match(by):
            return _error(400, 'JSON body {"by": "<user id>"} required')
        note = body.get("note")
        if note is not None and (not isinstance(note, str) or len(note) > ACK_NOTE_MAX):
            return _error(400, f"note: a string of at most {ACK_NOTE_MAX} characters")
        with session_factory() as s, s.begin():
            done = acknowledge(s, alert_id, by, note=note)
            row = s.get(Alert, alert_id)
            current = alert_to_dict(row) if row else None
        if current is None:
            return _error(404, "no such alert")
        if done and on_ack:
            on_ack(done)
        return jsonify({"acknowledged": bool(done), "alert": current})

    @bp.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document())

    return bp


def _max_severity(alerts: list[dict[str, Any]]) -> str | None:
    order = ["info", "warning", "critical"]
    found = [a.get("severity") for a in alerts if a.get("severity") in order]
    return max(found, key=order.index) if found else None


def install_error_handlers(app: Flask) -> None:
    """JSON errors under /api; a generic 500 body everywhere (no stack traces, no SQL)."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Any:
        if request.path.startswith("/api/"):
            return _error(exc.code or 500, exc.name)
        return exc

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        current_app.logger.exception("unhandled error on %s", request.path)
        return _error(500, "internal error")


def _params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        desc = prop.pop("description", "")
        prop.pop("title", None)
        out.append(
            {"name": name, "in": "query", "required": False, "description": desc, "schema": prop}
        )
    return out


def _object(types: dict[str, str], required: tuple[str, ...] = ()) -> dict[str, Any]:
    """An object schema: ``required`` fields are present and never null, others may be null."""
    props = {k: {"type": t if k in required else [t, "null"]} for k, t in types.items()}
    return {"type": "object", "required": list(required), "properties": props}


def _array(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


def _json_response(description: str, schema: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": ref}}}


WEBHOOK_HEADERS = (
    ("webhook-id", "msg_...: the same on every retry (deduplicate by it)"),
    ("webhook-timestamp", "unix seconds of this attempt"),
    ("webhook-signature", "v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>"),
)


def openapi_document() -> dict[str, Any]:
    err = {"$ref": "#/components/responses/Error"}
    call_row = _object(
        {
            "call_id": "string",
            "status": "string",
            "started_at": "string",
            "ended_at": "string",
            "agent_id": "string",
            "customer_id": "string",
            "queue": "string",
            "duration_s": "number",
            "anger_share": "number",
            "alerts": "integer",
            "open_alerts": "integer",
        },
        required=("call_id", "status", "started_at", "alerts", "open_alerts"),
    )
    alert = _object(
        {
            "id": "string",
            "call_id": "string",
            "rule": "string",
            "speaker": "string",
            "role": "string",
            "status": "string",
            "severity": "string",
            "message": "string",
            "raised_at": "string",
            "updated_at": "string",
            "resolved_at": "string",
            "acknowledged_by": "string",
            "acknowledged_at": "string",
            "acknowledged_note": "string",
            "details": "object",
        },
        required=("id", "call_id", "rule", "status", "severity", "raised_at"),
    )
    probs = {"type": "object", "additionalProperties": {"type": "number"}}
    window = _object(
        {"speaker": "string", "role": "string", "start_ms": "integer", "end_ms": "integer",
         "label": "string", "raw_label": "string", "confidence": "number",
         "uncertain": "boolean", "smoothed_label": "string"},
        required=("speaker", "start_ms", "end_ms", "label", "confidence"),
    )  # fmt: skip
    window["properties"] |= {"probabilities": probs, "smoothed_probabilities": probs}
    detail = _object({"channels": "integer", "sample_rate": "integer", "source": "string",
                      "summary": "object", "extra": "object"})  # fmt: skip
    call_metrics = ("duration_s", "silence_s", "silence_share", "long_silences", "long_silence_s",
                    "longest_silence_s", "overtalk_s", "overtalk_share")  # fmt: skip
    speaker_metrics = ("role", "talk_time_s", "talk_share", "talk_ratio", "turns",
                       "longest_monologue_s", "interruptions")  # fmt: skip
    integers = {"long_silences", "turns", "interruptions"}

    def typed(names: tuple[str, ...]) -> dict[str, str]:
        return {n: "integer" if n in integers else "string" if n == "role" else "number"
                for n in names}  # fmt: skip

    conversation = _object(typed(call_metrics), required=call_metrics)
    conversation["properties"]["speakers"] = {
        "type": "object",
        "additionalProperties": _object(typed(speaker_metrics), required=speaker_metrics),
    }
    conversation["required"].append("speakers")
    conversation["description"] = (
        "From both channels' VAD when the call ended: silence (long = over 3 s), overtalk; per "
        "speaker talk time, share of talk, turns, longest monologue, interruptions (overlap of "
        "at least 0.5 s)."
    )
    detail["properties"]["summary"] = {
        "type": ["object", "null"],
        "properties": {"conversation": {"$ref": "#/components/schemas/Conversation"}},
    }
    detail["required"] = list(call_row["required"])
    detail["properties"] = {
        **call_row["properties"],
        **detail["properties"],
        "speakers": _array(_object({"speaker": "string", "role": "string", "channel": "integer"},
                                   required=("speaker",))),  # fmt: skip
        "windows": _array(window),
        "alerts_list": _array({"$ref": "#/components/schemas/Alert"}),
    }
    worker = _object({"worker_id": "string", "age_s": "number", "live_calls": "integer",
                      "audio_partitions": "integer", "audio_lag": "integer"},
                     required=("worker_id", "age_s"))  # fmt: skip
    health = {"type": "object", "required": ["up", "workers"], "properties": {
        "up": {"type": "boolean"}, "newest_heartbeat_age_s": {"type": ["number", "null"]},
        "workers": _array(worker)}}  # fmt: skip
    ack = {"type": "object", "required": ["acknowledged", "alert"], "properties": {
        "acknowledged": {"type": "boolean", "description": "false: it already was"},
        "alert": {"$ref": "#/components/schemas/Alert"}}}  # fmt: skip

    nullable_str = {"type": ["string", "null"]}
    nullable_num = {"type": ["number", "null"]}
    delivery = {"type": "object", "required": ["event_id", "url", "attempt", "ok", "created_at"],
                "properties": {"event_id": {"type": "string"}, "alert_id": nullable_str,
                               "url": {"type": "string"}, "attempt": {"type": "integer"},
                               "ok": {"type": "boolean"},
                               "status_code": {"type": ["integer", "null"]},
                               "error": nullable_str,
                               "created_at": {"type": "string"}}}  # fmt: skip
    live_call = {
        "type": "object",
        "properties": {
            "call_id": {"type": "string"},
            "status": {"type": "string"},
            "attention": {"type": "number", "description": "higher = needs a supervisor more"},
            "agent_id": nullable_str,
            "customer_id": nullable_str,
            "queue": nullable_str,
            "call_time_s": {"type": "number"},
            "open_alerts": {"type": "integer"},
            "max_severity": {"type": ["string", "null"], "enum": ["info", "warning", "critical",
                                                                   None]},
            "speakers": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "speaker": {"type": "string"},
                        "role": {"type": "string"},
                        "label": nullable_str,
                        "confidence": nullable_num,
                        "uncertain": {"type": ["boolean", "null"]},
                        "anger": nullable_num,
                    },
                },
            },
        },
    }

    def page(item: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
            },
        }

    common = {"400": err, "401": err, "503": err}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "callsense API",
            "version": "1",
            "description": "Call history, call timelines and alerts.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/calls": {
                "get": {
                    "operationId": "searchCalls",
                    "summary": "Search calls (paged, sortable); format=csv exports all rows.",
                    "parameters": _params(CallQuery)
                    + [
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {"enum": ["json", "csv"], "default": "json"},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of calls",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/CallPage"}
                                },
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        **common,
                    },
                }
            },
            "/api/calls/{call_id}": {
                "get": {
                    "operationId": "getCall",
                    "summary": "Call metadata, speakers, emotion windows and alerts.",
                    "parameters": [
                        {
                            "name": "call_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": ID_PATTERN},
                        }
                    ],
                    "responses": {"200": _json_response("The call", "CallDetail"), "404": err,
                                  **common},  # fmt: skip
                }
            },
            "/api/health": {
                "get": {
                    "operationId": "getHealth",
                    "summary": "Pipeline health: up when a stream worker reported within 30 s; "
                    "each fresh worker's live calls, audio partitions and lag.",
                    "responses": {"200": _json_response("The verdict", "Health"), **common},
                }
            },
            "/api/live": {
                "get": {
                    "operationId": "getLive",
                    "summary": "Every active call (and those ended in the last 2 min), ranked "
                    "by attention as on the live view, with each speaker's current emotion.",
                    "responses": {
                        "200": {
                            "description": "The ranked live calls",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/LivePage"}
                                }
                            },
                        },
                        **common,
                    },
                }
            },
            "/api/alerts": {
                "get": {
                    "operationId": "searchAlerts",
                    "summary": "Search alerts.",
                    "parameters": _params(AlertQuery),
                    "responses": {
                        "200": {
                            "description": "A page of alerts",
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/AlertPage"}
                                }
                            },
                        },
                        **common,
                    },
                }
            },
            "/api/webhooks/deliveries": {
                "get": {
                    "operationId": "searchWebhookDeliveries",
                    "summary": "Webhook delivery attempts, newest first.",
                    "parameters": _params(DeliveryQuery),
                    "responses": {
                        "200": _json_response("A page of attempts", "DeliveryPage"),
                        **common,
                    },
                }
            },
            "/api/alerts/{alert_id}/ack": {
                "post": {
                    "operationId": "acknowledgeAlert",
                    "summary": "Acknowledge an alert (once; later calls change nothing).",
                    "parameters": [
                        {
                            "name": "alert_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["by"],
                                    "properties": {
                                        "by": {"type": "string"},
                                        "note": {
                                            "type": "string",
                                            "maxLength": ACK_NOTE_MAX,
                                            "description": "What was done (optional).",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {"200": _json_response("Current alert", "Ack"), "404": err,
                                  **common},  # fmt: skip
                }
            },
        },
        "webhooks": {
            "alertEvent": {
                "post": {
                    "operationId": "alertEvent",
                    "summary": "An alert changed (raised, updated, resolved, acknowledged), POSTed "
                    "to each CALLSENSE_WEBHOOK_URL endpoint whose filter matches; signed as "
                    "Standard Webhooks; retried until a 2xx, except other 4xx. (`callsense "
                    "webhook test` sends type webhook.test with data.message instead.)",
                    "security": [],
                    "parameters": [
                        {"name": name, "in": "header", "required": True,
                         "schema": {"type": "string"}, "description": text}
                        for name, text in WEBHOOK_HEADERS
                    ],  # fmt: skip
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/AlertWebhook"}}},
                    },  # fmt: skip
                    "responses": {"2XX": {"description": "Received; not sent again"}},
                }
            }
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "responses": {
                "Error": {
                    "description": "Error",
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {"error": {"type": "string"}},
                            }
                        }
                    },
                }
            },
            "schemas": {
                "Call": call_row,
                "CallDetail": detail,
                "Conversation": conversation,
                "Alert": alert,
                "Health": health,
                "AlertWebhook": {
                    "type": "object",
                    "required": ["type", "timestamp", "data"],
                    "properties": {
                        "type": {"enum": list(EVENT_TYPES)},
                        "timestamp": {"type": "string", "description": "ISO 8601"},
                        "data": {"$ref": "#/components/schemas/Alert"},
                    },
                },
                "Ack": ack,
                "CallPage": page("Call"),
                "AlertPage": page("Alert"),
                "Delivery": delivery,
                "DeliveryPage": page("Delivery"),
                "LiveCall": live_call,
                "LivePage": {
                    "type": "object",
                    "properties": {
                        "total": {"type": "integer"},
                        "items": {
                            "type": "array",
                            "items": {"$ref": "#/components/schemas/LiveCall"},
                        },
                    },
                },
            },
        },
    }
