"""Team views: per queue or per agent, the calls of a shift and those active now.

Customer emotion only: an agent's row counts their calls' *customer* anger, never the agent's
own emotion (EU AI Act Art. 5(1)(f); see ``CALLSENSE_EMOTION_ROLES``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import or_
from sqlalchemy.orm import Session

from callsense.storage.schema import Call
from callsense.storage.search import call_row, call_stats_query

ANGRY_SHARE = 0.2  # a call "had an angry customer": ≥ 20 % of confident customer windows angry
MAX_CALLS = 50_000  # calls read for one view (a shift of a large floor)


def shift_calls(
    session: Session, since: datetime, agent: str | None = None
) -> list[dict[str, Any]]:
    """Calls started since ``since`` or still active (optionally one agent's), newest first,
    as history rows."""
    stmt, _ = call_stats_query()
    stmt = stmt.where(or_(Call.started_at >= since, Call.status == "active"))
    if agent is not None:
        stmt = stmt.where(Call.agent_id == agent)
    rows = session.execute(stmt.order_by(Call.started_at.desc()).limit(MAX_CALLS)).all()
    return [call_row(*r) for r in rows]


def angry_customer(call: dict[str, Any]) -> bool:
    return (call["anger_share"] or 0.0) >= ANGRY_SHARE or call["alerts"] > 0


def summarise(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Active now, calls, share with an angry customer, open alerts, average handling time
    (mean duration of the calls that are over)."""
    done = [c["duration_s"] for c in calls if c["status"] != "active" and c["duration_s"]]
    return {
        "active": sum(c["status"] == "active" for c in calls),
        "calls": len(calls),
        "angry_share": (sum(map(angry_customer, calls)) / len(calls)) if calls else None,
        "open_alerts": sum(c["open_alerts"] for c in calls),
        "aht_s": sum(done) / len(done) if done else None,
    }


def team_overview(
    calls: list[dict[str, Any]], by: Literal["queue", "agent_id"]
) -> list[dict[str, Any]]:
    """One summary per queue (or agent) of a shift's calls (:func:`shift_calls`), most open
    alerts first, then most active calls; calls without a queue (agent) are grouped under
    ``None``."""
    groups: dict[str | None, list[dict[str, Any]]] = {}
    for c in calls:
        groups.setdefault(c[by], []).append(c)
    rows = [{"key": k, **summarise(v)} for k, v in groups.items()]
    rows.sort(key=lambda r: (-r["open_alerts"], -r["active"], -r["calls"], str(r["key"])))
    return rows
