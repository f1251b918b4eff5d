"""Widgets more than one page shows: badges and alert items with their Acknowledge action."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from callsense.dashboard.display import when
from dash import dcc, html

from callsense.storage.alerts import ACK_NOTE_MAX


def digest(data: Any) -> str:
    """A short digest of what a view shows: equal digests, nothing to re-render."""
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def badge(text: str, kind: str) -> html.Span:
    return html.Span(text, className=f"badge badge-{kind}")


def ack_state(a: dict[str, Any], can_ack: bool, note: bool = False) -> Any:
    """Who acknowledged the alert (and their note); else an Acknowledge button (with a note
    box when ``note``) for a supervisor, nothing to do for a resolved alert or an analyst."""
    if a.get("acknowledged_by"):
        said = f": {a['acknowledged_note']}" if a.get("acknowledged_note") else ""
        return html.Span(
            f"acknowledged by {a['acknowledged_by']} at {when(a['acknowledged_at'])}{said}",
            className="acked",
        )
    if a.get("status") == "resolved":  # nothing left to act on: no button
        return html.Span("resolved, not acknowledged", className="muted")
    if not can_ack:
        return html.Span("open (read-only)", className="muted")
    button = html.Button(
        "Acknowledge", id={"type": "ack", "alert": a["id"]}, n_clicks=0, className="ack-btn"
    )
    if not note:
        return button
    box = dcc.Input(id={"type": "ack-note", "alert": a["id"]}, placeholder="note (optional)",
                    maxLength=ACK_NOTE_MAX, className="ack-note")  # fmt: skip
    return html.Span([box, button])


def alert_item(a: dict[str, Any], can_ack: bool = True) -> html.Div:
    return html.Div(
        [
            badge(a["severity"], a["severity"]),
            badge(a["status"], "status"),
            html.Span(f" {a['rule']}: {a['message']} ", className="alert-msg"),
            ack_state(a, can_ack),
        ],
        className="alert-item",
        **{"data-alert": a["id"], "data-rule": a["rule"]},
    )
