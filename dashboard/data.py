"""Read models of the live view: active calls, the latest emotion per speaker, sparklines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from callsense.storage.alerts import alert_to_dict, open_alerts
from callsense.storage.schema import Call, EmotionWindow

SPARK_MS = 180_000  # sparkline: the last three minutes of call time
RECENT_ENDED = timedelta(minutes=2)


def _current(w: EmotionWindow) -> tuple[str, float]:
    probs = w.smoothed_probabilities or w.probabilities or {}
    label = w.smoothed_label or w.label
    conf = float(probs.get(label, w.confidence)) if probs else float(w.confidence)
    return label, conf


SEVERITY_POINTS = {"critical": 100.0, "warning": 50.0, "info": 10.0}


def attention(call: dict[str, Any]) -> float:
    """How much a call needs a supervisor now, highest first on the live view and in /api/live:
    its open alerts by severity (critical 100, warning 50, info 10 each), the customer's anger
    now (0-1, x 40) and its trend over the sparkline (last minus first, x 20, rises only), and
    a little for length (1 per 5 minutes). An ended call ranks below every active one."""
    score = sum(SEVERITY_POINTS.get(a.get("severity", ""), 10.0) for a in call["alerts"])
    for s in call["speakers"]:
        if s["role"] == "customer" and s["anger"]:
            score += 40.0 * s["anger"][-1] + 20.0 * max(0.0, s["anger"][-1] - s["anger"][0])
    score += call["call_time_s"] / 300.0
    return round(score if call["status"] == "active" else score - 1000.0, 2)


def live_overview(session: Session, max_calls: int | None = None) -> list[dict[str, Any]]:
    """Active calls (and calls ended in the last two minutes), ranked by :func:`attention`
    (ties: newest first). Every one of them unless ``max_calls`` is given."""
    since = datetime.now(UTC) - RECENT_ENDED
    query = (
        select(Call)
        .where(or_(Call.status == "active", Call.ended_at >= since))
        .order_by(Call.started_at.desc(), Call.call_id)
    )
    calls = list(session.scalars(query))
    ids = [c.call_id for c in calls]
    alerts_by_call: dict[str, list[dict]] = {}
    for a in open_alerts(session, ids) if ids else []:
        alerts_by_call.setdefault(a.call_id, []).append(alert_to_dict(a))
    out = []
    for c in calls:
        last = session.scalar(
            select(EmotionWindow.end_ms)
            .where(EmotionWindow.call_id == c.call_id)
            .order_by(EmotionWindow.end_ms.desc())
            .limit(1)
        )
        windows = (
            list(
                session.scalars(
                    select(EmotionWindow)
                    .where(
                        EmotionWindow.call_id == c.call_id,
                        EmotionWindow.end_ms >= last - SPARK_MS,
                    )
                    .order_by(EmotionWindow.speaker, EmotionWindow.start_ms)
                )
            )
            if last is not None
            else []
        )
        speakers: dict[str, dict[str, Any]] = {}
        for w in windows:
            s = speakers.setdefault(
                w.speaker, {"speaker": w.speaker, "role": w.role, "t": [], "anger": []}
            )
            probs = w.smoothed_probabilities or w.probabilities or {}
            s["t"].append((w.start_ms + w.end_ms) / 2000.0)
            s["anger"].append(float(probs.get("angry", 0.0)))
            s["label"], s["confidence"] = _current(w)
            s["uncertain"] = bool(w.uncertain)
            s["role"] = w.role
        out.append(
            {
                "call_id": c.call_id,
                "status": c.status,
                "agent_id": c.agent_id,
                "customer_id": c.customer_id,
                "queue": c.queue,
                "call_time_s": (last or 0) / 1000.0,
                "speakers": sorted(speakers.values(), key=lambda s: (s["role"], s["speaker"])),
                "alerts": alerts_by_call.get(c.call_id, []),
                "n_windows": len(windows),
            }
        )
        out[-1]["attention"] = attention(out[-1])
    out.sort(key=lambda c: -c["attention"])  # stable: newest first among equals
    return out if max_calls is None else out[:max_calls]
