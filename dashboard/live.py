"""The live wall (``/``): every live call as a card, ranked by attention, with filters.

Its cost per tick is bounded by what changed. The server reads all live calls at once
(:func:`live_overview`), turns each into a small view (display strings, an SVG sparkline: no
Plotly figure, no Dash component tree) and sends the order plus the views of the cards whose
digest differs from what the browser reports it has drawn (``live-rendered``). The browser
(``assets/live.js``) keeps one element a call: it rebuilds a card only when its view changed
and otherwise just moves it into place. A re-sent card costs nothing but time, so a lost or
late report never leaves a card stale. Every input and output of these callbacks is on this
page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dash
from callsense.dashboard.components import ack_status, digest
from callsense.dashboard.data import live_overview
from callsense.dashboard.display import mmss
from callsense.dashboard.figures import sparkline_svg
from dash import ClientsideFunction, Input, Output, State, dcc, html
from dash.exceptions import PreventUpdate

from callsense.palette import emotion_color

if TYPE_CHECKING:
    from collections.abc import Callable

LIVE_MAX_CARDS = 200  # beyond this the live page says how many it does not show


def layout() -> html.Div:
    filters = html.Div(
        [
            html.Label(["Queue", dcc.Dropdown(id="live-queue", options=[],
                                              placeholder="all queues")]),  # fmt: skip
            html.Label(["Agent", dcc.Input(id="live-agent", debounce=True,
                                           placeholder="agent id (part)")]),  # fmt: skip
            dcc.Checklist(id="live-alerted", options=[{"label": " alerts only", "value": "on"}],
                          value=[]),  # fmt: skip
            html.Button("Enable notifications", id="notify-permission", className="ack-btn"),
            dcc.Checklist(id="sound-on", options=[{"label": " sound on new alerts", "value": "on"}],
                          value=[], persistence=True, persistence_type="local"),  # fmt: skip
        ],
        className="filters",
    )
    return html.Div(
        [
            html.H2("Live calls"),
            filters,
            html.P(id="live-count", className="muted"),
            html.Div(id="live-calls"),  # drawn by assets/live.js
            dcc.Store(id="live-data"),  # server -> browser: {order, cards: {id: view}}
            dcc.Store(id="live-rendered"),  # browser -> server: {id: digest} drawn
            dcc.Store(id="live-ack"),  # browser -> server: a card's Acknowledge click
            html.Div(id="live-ack-msg", className="flash"),
        ]
    )


def filter_live(
    calls: list[dict[str, Any]], queue: str | None, agent: str | None, alerted: bool
) -> list[dict[str, Any]]:
    """The live calls a supervisor's filters keep (queue exact, agent case-insensitive part)."""
    agent = (agent or "").strip().lower()
    return [
        c for c in calls
        if (not queue or c["queue"] == queue)
        and (not agent or agent in (c["agent_id"] or "").lower())
        and (not alerted or c["alerts"])
    ]  # fmt: skip


def _alert_view(a: dict[str, Any], can_ack: bool) -> dict[str, Any]:
    kind, text = ack_status(a, can_ack)
    return {"id": a["id"], "rule": a["rule"], "severity": a["severity"], "status": a["status"],
            "message": a["message"], "ack": {"kind": kind, "text": text}}  # fmt: skip


def card_view(c: dict[str, Any], can_ack: bool = True) -> dict[str, Any]:
    """What one call's card shows, as display strings (assets/live.js draws it)."""
    return {
        "call_id": c["call_id"],
        "status": c["status"],
        "time": mmss(c["call_time_s"]),
        "who": f"agent {c['agent_id'] or '?'} · customer {c['customer_id'] or '?'}"
        f" · queue {c['queue'] or '-'}",
        "windows": c["n_windows"],
        "speakers": [
            {"role": s["role"], "speaker": s["speaker"], "label": s.get("label", "-"),
             "color": emotion_color(s.get("label", "-")), "uncertain": bool(s.get("uncertain")),
             "confidence": f"{s.get('confidence', 0):.0%}"}
            for s in c["speakers"]
        ],  # fmt: skip
        "spark": sparkline_svg(c["speakers"]),
        "alerts": [_alert_view(a, can_ack) for a in c["alerts"]],
    }


def wall_update(
    rendered: dict[str, str] | None, views: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The update for a browser that has drawn ``rendered`` ({call: digest}): the wanted order
    and the views of the cards it lacks or has drawn differently; ``None`` when it has them
    all, in order."""
    rendered = rendered or {}
    order, cards = [], {}
    for v in views:
        d = digest(v)
        order.append([v["call_id"], d])
        if rendered.get(v["call_id"]) != d:
            cards[v["call_id"]] = v
    if not cards and list(rendered) == [cid for cid, _ in order]:
        return None
    return {"order": order, "cards": cards}


def headline(calls: list[dict[str, Any]], kept: int, shown: int) -> str:
    if not calls:
        return "No active calls."
    active = sum(c["status"] == "active" for c in calls)
    alerted = sum(bool(c["alerts"]) for c in calls)
    head = (f"{active} active call{'s' * (active != 1)}, {alerted} with open alerts; "
            "ranked by attention (alerts, customer anger now and rising, duration)")  # fmt: skip
    if kept < len(calls):
        head += f"; the filters show {kept} and hide {len(calls) - kept}"
    if shown < kept:
        head += f"; showing the top {shown} of {kept} (the rest: History)"
    return head


def register(
    app: dash.Dash, sf: Any, can_ack: Callable[[], bool], acknowledge: Callable[[str], str]
) -> None:
    @app.callback(
        Output("live-data", "data"),
        Output("live-count", "children"),
        Output("live-queue", "options"),
        Input("tick", "n_intervals"),
        Input("live-queue", "value"),
        Input("live-agent", "value"),
        Input("live-alerted", "value"),
        State("live-rendered", "data"),
        State("live-count", "children"),
        State("live-queue", "options"),
    )
    def live(
        _n: int | None, queue: str | None, agent: str | None, alerted: list[str] | None,
        rendered: dict[str, str] | None, head_was: str | None, queues_were: list | None,
    ) -> Any:  # fmt: skip
        with sf() as s:
            calls = live_overview(s)
        kept = filter_live(calls, queue, agent, bool(alerted))
        top = kept[:LIVE_MAX_CARDS]
        acts = can_ack()
        update = wall_update(rendered, [card_view(c, acts) for c in top])
        head = headline(calls, len(kept), len(top))
        queues = sorted({c["queue"] for c in calls if c["queue"]})
        if update is None and head == head_was and queues == (queues_were or []):
            raise PreventUpdate
        return (
            update if update is not None else dash.no_update,
            head if head != head_was else dash.no_update,
            queues if queues != (queues_were or []) else dash.no_update,
        )

    app.clientside_callback(
        ClientsideFunction(namespace="callsense", function_name="renderWall"),
        Output("live-rendered", "data"),
        Input("live-data", "data"),
    )

    @app.callback(Output("live-ack-msg", "children"), Input("live-ack", "data"),
                  prevent_initial_call=True)  # fmt: skip
    def ack(request: dict[str, Any] | None) -> Any:
        if not request or not request.get("alert"):
            raise PreventUpdate
        return acknowledge(str(request["alert"]))
