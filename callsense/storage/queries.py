"""Stored calls for ``callsense calls list|show``: recent calls and one call's trajectories.

Thin views over :mod:`callsense.storage.search` (which owns the SQL shared with the dashboard and
the JSON API), shaped for the command line: ``get_call`` groups a call's emotion windows into one
trajectory per speaker.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from callsense.storage.search import MAX_LIMIT, CallQuery, call_detail, search_calls

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-21``, ``2026-11-21T10:00``, ``...+01:00`` (naive = UTC) or a relative age
    such as ``30m``, ``2h``, ``7d`` → an aware UTC datetime. Raises ``ValueError`` otherwise."""
    m = _RELATIVE.match(text)
    if m:
        now = now or datetime.now(UTC)
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"invalid time {text!r}: use ISO 8601 (2026-11-21T10:00) or an age like 30m, 2h, 7d"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def list_calls(session: Session, since: datetime | None = None, limit: int = 50) -> list[dict]:
    """Calls started at or after ``since`` (all when None), newest first, at most ``limit``.

    Each row: call_id, status, started_at, ended_at, agent_id, customer_id, queue, duration_s,
    anger_share, alerts, open_alerts.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    q = CallQuery(started_from=since, limit=limit, sort="started_at", order="desc")
    return search_calls(session, q)["items"]


def get_call(session: Session, call_id: str) -> dict[str, Any] | None:
    """``{"call": {...}, "speakers": [{speaker, role, channel, trajectory: [windows]}],
    "summary": {...} | None, "alerts": [...]}`` or None when the call is unknown.

    A trajectory lists the speaker's windows in time order: start_ms, end_ms, label, raw_label,
    confidence, uncertain, probabilities, smoothed_label, smoothed_probabilities.
    """
    d = call_detail(session, call_id)
    if d is None:
        return None
    windows = d.pop("windows")
    speakers = d.pop("speakers")
    summary = d.pop("summary")
    alerts = d.pop("alerts_list", [])
    for s in speakers:
        s["trajectory"] = [
            {k: v for k, v in w.items() if k not in ("speaker", "role")}
            for w in windows
            if w["speaker"] == s["speaker"]
        ]
    return {"call": d, "speakers": speakers, "summary": summary, "alerts": alerts}
