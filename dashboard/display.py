"""How values read on screen: times in the dashboard host's zone with the zone named,
durations as m:ss, field names as labels. Data (API, CSV) keeps ISO 8601 and seconds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

LABELS = {
    "call_id": "Call",
    "status": "Status",
    "started_at": "Started",
    "ended_at": "Ended",
    "agent_id": "Agent",
    "customer_id": "Customer",
    "queue": "Queue",
    "duration_s": "Duration",
    "anger_share": "Customer anger share",
    "alerts": "Alerts",
    "open_alerts": "Open alerts",
    "channels": "Channels",
    "source": "Source",
    "sample_rate": "Sample rate (Hz)",
}


def when(value: str | datetime | None) -> str:
    """``2026-12-03 07:59:39 CET`` (the host's local zone), or "-"."""
    if value is None or value == "":
        return "-"
    try:
        dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    local = dt.astimezone() if dt.tzinfo else dt
    return local.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()


def mmss(seconds: float | None) -> str:
    """``4:07``; ``1:02:03`` from an hour on; "-" when unknown."""
    if seconds is None:
        return "-"
    total = int(round(float(seconds)))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def label(field: str) -> str:
    return LABELS.get(field, field.replace("_", " ").capitalize())


def shown(field: str, value: Any) -> str:
    """A stored value as the dashboard shows it."""
    if value is None or value == "":
        return "-"
    if field.endswith("_at"):
        return when(value)
    if field.endswith("duration_s"):
        return mmss(value)
    if field == "anger_share":
        return f"{100 * float(value):.0f} %"
    return str(value)
