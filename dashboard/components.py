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


def ack_status(a: dict[str, Any], can_ack: bool) -> tuple[str, str]:
    """(kind, text) of an alert's acknowledgement: who acknowledged it and their note
    (``acked``), nothing left to act on or read-only (``muted``), else an Acknowledge
    ``button`` for a supervisor."""
    if a.get("acknowledged_by"):
        said = f": {a['acknowledged_note']}" if a.get("acknowledged_note") else ""
        at = when(a["acknowledged_at"])
        return "acked", f"acknowledged by {a['acknowledged_by']} at {at}{said}"
    if a.get("status") == "resolved":
        return "muted", "resolved, not acknowledged"
    if not can_ack:
        return "muted", "open (read-only)"
    return "button", "Acknowledge"


def ack_state(a: dict[str, Any], can_ack: bool, note: bool = False) -> Any:
    """:func:`ack_status` as components; the button comes with a note box when ``note``."""
    kind, text = ack_status(a, can_ack)
    if kind != "button":
        return html.Span(text, className=kind)
    button = html.Button(text, id={"type": "ack", "alert": a["id"]}, n_clicks=0,
                         className="ack-btn")  # fmt: skip
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
