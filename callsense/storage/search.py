"""Call history search, call detail and live overview queries (SQLite and PostgreSQL).

One validated query object (:class:`CallQuery`) serves the history page, the JSON API
(``/api/calls``) and ``callsense calls search``. Every value reaches the database as a bound
parameter; sort keys come from an allow-list.

Derived columns: ``duration_s`` is the call summary's duration, or for a call still running the
end of its latest emotion window; ``anger_share`` is the summary's value, or for a running call
the share of the customer's confident windows labelled angry (all speakers' when no speaker has
the customer role); ``alerts`` counts the call's alerts, ``open_alerts`` the unresolved ones.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Float, and_, case, cast, func, literal, select, true
from sqlalchemy.orm import Session

from callsense.storage.alerts import _aware, alert_to_dict
from callsense.storage.schema import (
    Alert,
    Call,
    CallSummary,
    EmotionWindow,
    Speaker,
    WebhookDelivery,
)

ID_PATTERN = r"^[A-Za-z0-9_.:@+\-]{1,128}$"
MAX_LIMIT = 500
SORT_KEYS = (
    "started_at",
    "duration_s",
    "anger_share",
    "alerts",
    "agent_id",
    "customer_id",
    "queue",
    "call_id",
)


def _as_utc(v: datetime | None) -> datetime | None:
    """Naive datetimes are UTC; years outside 1970-2200 are rejected (a 4xx, not a DB error)."""
    if v is None:
        return None
    if v.tzinfo is None:
        v = v.replace(tzinfo=UTC)
    if not (1970 <= v.year <= 2200):
        raise ValueError("date out of range (1970-2200)")
    return v


CallStatus = Literal["active", "ended", "abandoned", "truncated", "failed"]


class CallQuery(BaseModel):
    """Filters, order and page of a call search (unknown fields are an error)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    started_from: datetime | None = Field(None, description="Call started at or after (ISO).")
    started_to: datetime | None = Field(None, description="Call started before (ISO 8601).")
    agent: str | None = Field(
        None, pattern=ID_PATTERN, description="Agent id (case-insensitive, any part)."
    )
    customer: str | None = Field(
        None, pattern=ID_PATTERN, description="Customer id (case-insensitive, any part)."
    )
    queue: str | None = Field(
        None, pattern=ID_PATTERN, description="Queue (case-insensitive, any part)."
    )
    status: CallStatus | None = Field(None, description="Call status.")
    min_anger_share: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="Minimum anger share 0-1."
    )
    alerted: bool | None = Field(None, description="Only calls with (true) / without alerts.")
    min_duration_s: float | None = Field(
        None, ge=0, le=10_000_000, allow_inf_nan=False, description="Minimum duration (s)."
    )
    max_duration_s: float | None = Field(
        None, ge=0, le=10_000_000, allow_inf_nan=False, description="Maximum duration (s)."
    )
    min_long_silences: int | None = Field(
        None, ge=0, le=1_000_000, description="Minimum silences over 3 s (ended calls)."
    )
    min_overtalk_share: float | None = Field(
        None, ge=0, le=1, allow_inf_nan=False, description="Minimum overtalk share 0-1."
    )
    sort: Literal[SORT_KEYS] = Field("started_at", description="Sort key.")  # type: ignore[valid-type]
    order: Literal["asc", "desc"] = Field("desc", description="Sort order.")
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="Page size.")
    offset: int = Field(0, ge=0, le=10_000_000, description="Rows to skip.")

    _utc = field_validator("started_from", "started_to")(classmethod(lambda cls, v: _as_utc(v)))


def _window_stats():
    ew = EmotionWindow
    confident = ew.uncertain.is_(False)
    angry = and_(confident, ew.label == "angry")
    cust = ew.role == "customer"
    return (
        select(
            ew.call_id.label("call_id"),
            func.max(ew.end_ms).label("max_end_ms"),
            func.count().label("n_windows"),
            func.sum(case((and_(cust, confident), 1), else_=0)).label("n_cust"),
            func.sum(case((and_(cust, angry), 1), else_=0)).label("n_cust_angry"),
            func.sum(case((confident, 1), else_=0)).label("n_conf"),
            func.sum(case((angry, 1), else_=0)).label("n_angry"),
        )
        .group_by(ew.call_id)
        .subquery("ws")
    )


def _alert_stats():
    return (
        select(
            Alert.call_id.label("call_id"),
            func.count().label("n_alerts"),
            func.sum(case((Alert.status != "resolved", 1), else_=0)).label("n_open"),
        )
        .group_by(Alert.call_id)
        .subquery("als")
    )


def call_stats_query():
    """Calls with their duration, customer anger share and alert counts (summary values when
    the call ended, live ones from its windows before); ``(select, {name: column})``."""
    ws, als = _window_stats(), _alert_stats()
    live_share = case(
        (ws.c.n_cust > 0, cast(ws.c.n_cust_angry, Float) / ws.c.n_cust),
        (ws.c.n_conf > 0, cast(ws.c.n_angry, Float) / ws.c.n_conf),
        else_=None,
    )
    cols = {
        "duration_s": func.coalesce(CallSummary.duration_s, cast(ws.c.max_end_ms, Float) / 1000.0),
        "anger_share": func.coalesce(CallSummary.anger_share, live_share),
        "alerts": func.coalesce(als.c.n_alerts, literal(0)),
        "open_alerts": func.coalesce(als.c.n_open, literal(0)),
    }
    stmt = (
        select(Call, *(c.label(k) for k, c in cols.items()))
        .outerjoin(CallSummary, CallSummary.call_id == Call.call_id)
        .outerjoin(ws, ws.c.call_id == Call.call_id)
        .outerjoin(als, als.c.call_id == Call.call_id)
    )
    return stmt, cols


def call_row(call: Call, duration_s: Any, anger: Any, alerts: Any, open_alerts: Any) -> dict:
    """One row of :func:`call_stats_query` as a history row (ISO times, rounded figures)."""
    started, ended = _aware(call.started_at), _aware(call.ended_at)
    return {
        "call_id": call.call_id,
        "status": call.status,
        "started_at": started.isoformat() if started else None,
        "ended_at": ended.isoformat() if ended else None,
        "agent_id": call.agent_id,
        "customer_id": call.customer_id,
        "queue": call.queue,
        "duration_s": round(float(duration_s), 2) if duration_s is not None else None,
        "anger_share": round(float(anger), 3) if anger is not None else None,
        "alerts": int(alerts or 0),
        "open_alerts": int(open_alerts or 0),
    }


def search_calls(session: Session, q: CallQuery) -> dict[str, Any]:
    """``{"total": n, "limit", "offset", "items": [call rows]}`` for a query."""
    stmt, cols = call_stats_query()
    conds = []
    if q.started_from:
        conds.append(Call.started_at >= q.started_from)
    if q.started_to:
        conds.append(Call.started_at < q.started_to)
    for value, col in (
        (q.agent, Call.agent_id),
        (q.customer, Call.customer_id),
        (q.queue, Call.queue),
    ):
        if value:  # case-insensitive part ("bill" finds "Billing"); % and _ are literal
            conds.append(func.lower(col).contains(value.lower(), autoescape=True))
    if q.status:
        conds.append(Call.status == q.status)
    if q.min_anger_share is not None:
        conds.append(cols["anger_share"] >= q.min_anger_share)
    if q.alerted is not None:
        conds.append(cols["alerts"] > 0 if q.alerted else cols["alerts"] == 0)
    if q.min_duration_s is not None:
        conds.append(cols["duration_s"] >= q.min_duration_s)
    if q.max_duration_s is not None:
        conds.append(cols["duration_s"] <= q.max_duration_s)
    conversation = CallSummary.summary["conversation"]
    if q.min_long_silences is not None:
        conds.append(conversation["long_silences"].as_integer() >= q.min_long_silences)
    if q.min_overtalk_share is not None:
        conds.append(conversation["overtalk_share"].as_float() >= q.min_overtalk_share)
    if conds:
        stmt = stmt.where(and_(*conds))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    key = cols.get(q.sort, getattr(Call, q.sort, None))
    ordered = key.asc() if q.order == "asc" else key.desc()
    tie = Call.call_id.asc() if q.order == "asc" else Call.call_id.desc()
    rows = session.execute(
        stmt.order_by(ordered.nulls_last(), tie).limit(q.limit).offset(q.offset)
    ).all()
    return {
        "total": int(total),
        "limit": q.limit,
        "offset": q.offset,
        "items": [call_row(*r) for r in rows],
    }


CSV_FIELDS = [
    "call_id",
    "status",
    "started_at",
    "ended_at",
    "agent_id",
    "customer_id",
    "queue",
    "duration_s",
    "anger_share",
    "alerts",
    "open_alerts",
]


def calls_csv(session: Session, q: CallQuery, max_rows: int = 100_000) -> str:
    """Every row matching ``q`` (all pages, in the query's order) as CSV."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    offset = 0
    while offset < max_rows:
        page = search_calls(session, q.model_copy(update={"limit": MAX_LIMIT, "offset": offset}))
        for item in page["items"]:
            writer.writerow({k: ("" if v is None else _csv_safe(v)) for k, v in item.items()})
        offset += MAX_LIMIT
        if offset >= page["total"]:
            break
    return buf.getvalue()


def _csv_safe(v: Any) -> Any:
    """Neutralise spreadsheet formulas in text cells (CSV injection)."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@"):
        return "'" + v
    return v


def window_to_dict(w: EmotionWindow) -> dict[str, Any]:
    return {
        "speaker": w.speaker,
        "role": w.role,
        "start_ms": w.start_ms,
        "end_ms": w.end_ms,
        "label": w.label,
        "raw_label": w.raw_label,
        "confidence": round(float(w.confidence), 4),
        "uncertain": bool(w.uncertain),
        "probabilities": w.probabilities,
        "smoothed_label": w.smoothed_label,
        "smoothed_probabilities": w.smoothed_probabilities,
    }


def call_detail(session: Session, call_id: str, since_ms: int | None = None) -> dict | None:
    """Metadata, speakers, summary, windows (optionally only after ``since_ms``) and alerts."""
    stmt, _ = call_stats_query()
    row = session.execute(stmt.where(Call.call_id == call_id)).first()
    if row is None:
        return None
    out = call_row(*row)
    call: Call = row[0]
    out.update(
        channels=call.channels,
        sample_rate=call.sample_rate,
        source=call.source,
        extra=call.extra or {},
    )
    speakers = session.scalars(
        select(Speaker).where(Speaker.call_id == call_id).order_by(Speaker.speaker)
    )
    out["speakers"] = [
        {"speaker": s.speaker, "role": s.role, "channel": s.channel} for s in speakers
    ]
    summary = session.get(CallSummary, call_id)
    out["summary"] = summary.summary if summary else None
    wstmt = select(EmotionWindow).where(EmotionWindow.call_id == call_id)
    if since_ms is not None:
        wstmt = wstmt.where(EmotionWindow.start_ms > since_ms)
    windows = session.scalars(wstmt.order_by(EmotionWindow.speaker, EmotionWindow.start_ms))
    out["windows"] = [window_to_dict(w) for w in windows]
    known = {s["speaker"] for s in out["speakers"]}
    for w in out["windows"]:
        if w["speaker"] not in known:
            known.add(w["speaker"])
            out["speakers"].append({"speaker": w["speaker"], "role": w["role"], "channel": None})
    alerts = session.scalars(
        select(Alert).where(Alert.call_id == call_id).order_by(Alert.raised_at)
    )
    out["alerts_list"] = [alert_to_dict(a) for a in alerts]
    return out


class AlertQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    status: Literal["open", "resolved", "all"] = Field("all", description="Alert state.")
    call_id: str | None = Field(None, pattern=ID_PATTERN, description="Only this call.")
    rule: str | None = Field(None, pattern=r"^[a-z0-9_\-]{1,64}$", description="Rule name.")
    acknowledged: bool | None = Field(None, description="Acknowledged (true) or not (false).")
    raised_from: datetime | None = Field(None, description="Raised at or after (ISO 8601).")
    raised_to: datetime | None = Field(None, description="Raised before (ISO 8601).")
    limit: int = Field(50, ge=1, le=MAX_LIMIT, description="Page size.")
    offset: int = Field(0, ge=0, le=10_000_000, description="Rows to skip.")

    _utc = field_validator("raised_from", "raised_to")(classmethod(lambda cls, v: _as_utc(v)))


def search_alerts(session: Session, q: AlertQuery) -> dict[str, Any]:
    conds = []
    if q.status == "open":
        conds.append(Alert.status != "resolved")
    elif q.status == "resolved":
        conds.append(Alert.status == "resolved")
    if q.call_id:
        conds.append(Alert.call_id == q.call_id)
    if q.rule:
        conds.append(Alert.rule == q.rule)
    if q.acknowledged is not None:
        conds.append(
            Alert.acknowledged_by.is_not(None)
            if q.acknowledged
            else Alert.acknowledged_by.is_(None)
        )
    if q.raised_from:
        conds.append(Alert.raised_at >= q.raised_from)
    if q.raised_to:
        conds.append(Alert.raised_at < q.raised_to)
    stmt = select(Alert).where(and_(true(), *conds))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(Alert.raised_at.desc(), Alert.id).limit(q.limit).offset(q.offset)
    )
    return {
        "total": int(total),
        "limit": q.limit,
        "offset": q.offset,
        "items": [alert_to_dict(a) for a in rows],
    }


class DeliveryQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    alert_id: str | None = Field(None, pattern=ID_PATTERN, description="Only this alert.")
    ok: bool | None = Field(None, description="Only accepted (true) or failed (false) attempts.")
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description="Page size.")
    offset: int = Field(0, ge=0, le=10_000_000, description="Rows to skip.")


def search_deliveries(session: Session, q: DeliveryQuery) -> dict[str, Any]:
    """Webhook delivery attempts, newest first (one row per endpoint and attempt)."""
    conds = []
    if q.alert_id:
        conds.append(WebhookDelivery.alert_id == q.alert_id)
    if q.ok is not None:
        conds.append(WebhookDelivery.ok.is_(q.ok))
    stmt = select(WebhookDelivery).where(and_(true(), *conds))
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(stmt.order_by(WebhookDelivery.id.desc()).limit(q.limit).offset(q.offset))
    return {
        "total": int(total),
        "limit": q.limit,
        "offset": q.offset,
        "items": [
            {
                "event_id": r.event_id,
                "alert_id": r.alert_id,
                "url": r.url,
                "attempt": r.attempt,
                "ok": bool(r.ok),
                "status_code": r.status_code,
                "error": r.error,
                "created_at": _aware(r.created_at).isoformat(),
            }
            for r in rows
        ],
    }
