"""Read models of the live view: active calls, the latest emotion per speaker, sparklines.

The cost is bounded by the number of live calls, not by their length: four queries whatever
the count (calls, open alerts, the last minutes' anger of every call, the newest window of
every speaker), columns only; the database averages the sparkline into 3 s points (at most 60
a speaker), so no window row crosses into Python."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from callsense.storage.alerts import alert_to_dict, open_alerts
from callsense.storage.schema import Alert, Call, EmotionWindow

SPARK_MS = 180_000  # sparkline: the last three minutes of call time
SPARK_BUCKET_MS = 3000  # a sparkline point: the mean anger of a speaker's windows in 3 s
RECENT_ENDED = timedelta(minutes=2)
SEVERITY_POINTS = {"critical": 100.0, "warning": 50.0, "info": 10.0}


def attention(call: dict[str, Any]) -> float:
    """How much a call needs a supervisor now, highest first on the live view and in /api/live:
    its open alerts by severity (critical 100, warning 50, info 10 each), the customer's anger
    now (0-1, x 40: the newest window) and its trend over the sparkline (now minus its first
    point, x 20, rises only), and a little for length (1 per 5 minutes). An ended call ranks
    below every active one. Whole points, so that the wall's order stays put between small
    changes (equal scores: the newest call first)."""
    score = sum(SEVERITY_POINTS.get(a.get("severity", ""), 10.0) for a in call["alerts"])
    for s in call["speakers"]:
        if s["role"] == "customer" and s["anger"]:
            now = s.get("anger_now", s["anger"][-1])
            score += 40.0 * now + 20.0 * max(0.0, now - s["anger"][0])
    score += call["call_time_s"] / 300.0
    return float(round(score if call["status"] == "active" else score - 1000.0))


def _anger(w: Any) -> Any:
    smoothed = w.smoothed_probabilities["angry"].as_float()
    return func.coalesce(smoothed, w.probabilities["angry"].as_float(), 0.0)


def _is_live() -> Any:
    """An active call, or one that ended in the last :data:`RECENT_ENDED`."""
    return or_(Call.status == "active", Call.ended_at >= datetime.now(UTC) - RECENT_ENDED)


def live_overview(session: Session, max_calls: int | None = None) -> list[dict[str, Any]]:
    """Active calls (and calls ended in the last two minutes), ranked by :func:`attention`
    (ties: newest first). Every one of them unless ``max_calls`` is given."""
    calls = session.execute(
        select(Call.call_id, Call.status, Call.agent_id, Call.customer_id, Call.queue)
        .where(_is_live())
        .order_by(Call.started_at.desc(), Call.call_id)
    ).all()
    ids = [c.call_id for c in calls]
    if not ids:
        return []
    alerts_by_call: dict[str, list[dict]] = {}
    for a in open_alerts(session, ids):
        alerts_by_call.setdefault(a.call_id, []).append(alert_to_dict(a))

    W = EmotionWindow
    last = (
        select(W.call_id, func.max(W.end_ms).label("last"))
        .where(W.call_id.in_(ids))
        .group_by(W.call_id)
        .subquery()
    )
    bucket = ((last.c.last - W.end_ms) // SPARK_BUCKET_MS).label("bucket")  # 0: the newest
    recent = session.execute(
        select(W.call_id, W.speaker, func.min(W.start_ms).label("start"),
               func.max(W.end_ms).label("end"), func.avg(_anger(W)).label("anger"),
               func.count().label("n"), func.max(last.c.last).label("last"))
        .join(last, and_(W.call_id == last.c.call_id, W.end_ms >= last.c.last - SPARK_MS))
        .group_by(W.call_id, W.speaker, bucket)
        .order_by(W.call_id, W.speaker, bucket.desc())
    ).all()  # fmt: skip
    newest_start = (
        select(W.call_id, W.speaker, func.max(W.start_ms).label("start"))
        .where(W.call_id.in_(ids))
        .group_by(W.call_id, W.speaker)
        .subquery()
    )
    newest = session.execute(
        select(W.call_id, W.speaker, W.role, W.label, W.confidence, W.uncertain,
               W.probabilities, W.smoothed_label, W.smoothed_probabilities)
        .join(newest_start, and_(W.call_id == newest_start.c.call_id,
                                 W.speaker == newest_start.c.speaker,
                                 W.start_ms == newest_start.c.start))
    ).all()  # fmt: skip

    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    call_end: dict[str, int] = {}
    n_windows: dict[str, int] = {}
    for call_id, speaker, start, end, anger, n, last_end in recent:
        series.setdefault(call_id, {}).setdefault(speaker, []).append(
            ((start + end) / 2000.0, float(anger))
        )
        call_end[call_id] = last_end
        n_windows[call_id] = n_windows.get(call_id, 0) + n
    current: dict[tuple[str, str], dict[str, Any]] = {}
    for r in newest:
        probs = r.smoothed_probabilities or r.probabilities or {}
        label = r.smoothed_label or r.label
        conf = float(probs.get(label, r.confidence)) if probs else float(r.confidence)
        current[(r.call_id, r.speaker)] = {
            "role": r.role, "label": label, "confidence": conf, "uncertain": bool(r.uncertain),
            "anger_now": float(probs.get("angry", 0.0)),
        }  # fmt: skip

    out = []
    for c in calls:
        speakers = []
        for spk, points in series.get(c.call_id, {}).items():
            now = current.get((c.call_id, spk), {"role": "unknown"})
            speakers.append({"speaker": spk, **now, "t": [t for t, _ in points],
                             "anger": [a for _, a in points]})  # fmt: skip
        call = {
            "call_id": c.call_id,
            "status": c.status,
            "agent_id": c.agent_id,
            "customer_id": c.customer_id,
            "queue": c.queue,
            "call_time_s": call_end.get(c.call_id, 0) / 1000.0,
            "speakers": sorted(speakers, key=lambda s: (s["role"], s["speaker"])),
            "alerts": alerts_by_call.get(c.call_id, []),
            "n_windows": n_windows.get(c.call_id, 0),
        }
        call["attention"] = attention(call)
        out.append(call)
    out.sort(key=lambda c: -c["attention"])  # stable: newest first among equals
    return out if max_calls is None else out[:max_calls]


def live_alerts(session: Session) -> list[dict[str, Any]]:
    """The open alerts of the live calls (what the tab title counts and notifications name),
    newest first, in one query."""
    rows = session.execute(
        select(Alert.id, Alert.call_id, Alert.severity, Alert.message)
        .join(Call, Call.call_id == Alert.call_id)
        .where(Alert.status != "resolved", _is_live())
        .order_by(Alert.raised_at.desc(), Alert.id)
    ).all()
    return [r._asdict() for r in rows]
