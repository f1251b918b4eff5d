"""The supervisor dashboard (Dash + Plotly on Flask).

Pages: ``/`` live calls, ``/call/<id>`` trajectories + alerts (also the review timeline of a
past call), ``/history`` search with CSV export, ``/upload`` one-off analysis, ``/webhooks``
delivery log, plus the JSON API under ``/api`` (see :mod:`callsense.dashboard.api`). Everything
is read from the database with a ``dcc.Interval`` of at most 1 s, so data is on screen within
~2 s of being written; no Kafka is needed to render.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args
from urllib.parse import quote, urlencode

import dash
from callsense.dashboard import live
from callsense.dashboard.api import install_error_handlers, make_api, parse_query
from callsense.dashboard.auth import can_act, current_user, install_auth
from callsense.dashboard.components import ack_state, alert_item, badge, digest
from callsense.dashboard.data import live_alerts
from callsense.dashboard.display import label, mmss, shown, when
from callsense.dashboard.figures import trajectory_figure
from callsense.dashboard.microphone import install_microphone
from dash import ALL, Dash, Input, Output, State, ctx, dash_table, dcc, html
from dash.exceptions import PreventUpdate
from flask import Flask, Response, request, send_file

from callsense.storage.alerts import acknowledge, inbox_alerts, recent_deliveries
from callsense.storage.db import make_engine, session_factory
from callsense.storage.recordings import Recordings
from callsense.storage.rules import current_rules, rule_versions, save_rules
from callsense.storage.search import (
    CSV_FIELDS,
    ID_PATTERN,
    CallQuery,
    CallStatus,
    call_detail,
    calls_csv,
    search_calls,
)
from callsense.storage.team import ANGRY_SHARE, shift_calls, summarise, team_overview

if TYPE_CHECKING:
    from callsense.settings import Settings

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parent / "assets"
UPLOAD_MAX_BYTES = 50 * 1024 * 1024
UPLOAD_TYPES = (".wav", ".flac", ".ogg", ".mp3")
HISTORY_FIELDS = [  # the history form's inputs (value); the date range comes apart
    "status",
    "agent",
    "customer",
    "queue",
    "min_anger_share",
    "alerted",
    "min_duration_s",
    "max_duration_s",
    "min_long_silences",
    "min_overtalk_share",
]
HISTORY_COLUMNS = [
    ("call_link", "call", "markdown"),
    ("status", "status", "text"),
    ("started_at", "started", "text"),
    ("agent_id", "agent", "text"),
    ("customer_id", "customer", "text"),
    ("queue", "queue", "text"),
    ("duration_s", "duration", "text"),
    ("anger_share", "anger share", "numeric"),
    ("alerts", "alerts", "numeric"),
]


class AckNotifier:
    """After an acknowledgement: deliver the ``alert.acknowledged`` webhook off the request
    thread (with the delivery log), when webhooks are configured."""

    def __init__(self, settings: Settings, sf: Any) -> None:
        self.settings, self.sf = settings, sf
        self.threads: list[threading.Thread] = []

    def __call__(self, alert: dict[str, Any]) -> None:
        from datetime import datetime

        from callsense.processors.alerts import acknowledged_event
        from callsense.processors.webhooks import Message, deliverer_from_settings

        try:
            deliverer = deliverer_from_settings(self.settings, self.sf)
        except ValueError as exc:
            log.error("webhooks not sent: %s", exc)
            return
        if deliverer is None:
            return
        at = datetime.fromisoformat(alert["acknowledged_at"])
        msg = Message.from_alert_event(acknowledged_event(alert, alert["acknowledged_by"], at))
        t = threading.Thread(target=lambda: asyncio.run(deliverer.deliver(msg)), daemon=True)
        t.start()
        self.threads.append(t)


# --------------------------------------------------------------------------------------- views
# a new open alert on any live call: the tab title counts open alerts, an in-page toast names
# the new ones, a browser notification shows them when the user allowed notifications, and a
# short tone plays (higher for critical) when the user turned sound on
NOTIFY_JS = """
function(alerts) {
    if (alerts === null || alerts === undefined) { return window.dash_clientside.no_update; }
    const list = alerts;
    document.title = list.length ? "(" + list.length + ") callsense" : "callsense";
    const seen = window.__callsenseSeen;
    window.__callsenseSeen = new Set([...(seen || []), ...list.map(a => a.id)]);
    if (seen === undefined) { return window.dash_clientside.no_update; }
    const fresh = list.filter(a => !seen.has(a.id));
    if (!fresh.length) { return window.dash_clientside.no_update; }
    const text = fresh.map(a => a.severity + " alert on " + a.call_id + ": " + a.message)
        .join("; ");
    if ("Notification" in window && Notification.permission === "granted") {
        new Notification("callsense", {body: text, tag: fresh[0].id});
    }
    if (window.localStorage.getItem("callsense.sound") === "on") {
        try {
            const ac = window.__callsenseAudio || (window.__callsenseAudio = new AudioContext());
            const tone = ac.createOscillator(), gain = ac.createGain();
            tone.frequency.value = fresh.some(a => a.severity === "critical") ? 880 : 660;
            gain.gain.value = 0.15;
            tone.connect(gain).connect(ac.destination);
            tone.start();
            tone.stop(ac.currentTime + 0.3);
            window.__callsenseBeeps = (window.__callsenseBeeps || 0) + 1;
        } catch (e) { console.warn("callsense: no sound", e); }
    }
    return text;
}
"""


def call_page(call_id: str, recording: bool = False) -> html.Div:
    player = []
    if recording:  # assets/playhead.js keeps the player and the timeline together
        player = [html.Audio(id="call-audio", src=f"/recordings/{quote(call_id, safe='')}.wav",
                             controls=True, preload="metadata"),
                  html.P("Recording: the line on the timeline follows playback; click the "
                         "timeline to jump there.", className="muted")]  # fmt: skip
    return html.Div(
        [
            html.H2(f"Call {call_id}"),
            dcc.Store(id="call-id", data=call_id),
            dcc.Store(id="call-sig"),
            html.Div(id="call-meta", className="meta"),
            *player,
            dcc.Graph(id="call-graph", config={"displaylogo": False}),
            html.H3("Conversation"),
            html.Div(id="call-conversation"),
            html.H3("Alerts"),
            html.Div(id="call-alerts"),
        ]
    )


def conversation_view(conv: dict[str, Any] | None, live_at_s: float | None = None) -> Any:
    """The call's conversation metrics (from both channels' VAD) as two small tables; with
    ``live_at_s``, those of a live call's first ``live_at_s`` seconds."""
    if not conv:
        return html.P("Conversation metrics appear when the call ends.", className="muted")
    caption = (
        [html.P(f"Live: the first {mmss(live_at_s)} of the call (final figures when it ends).",
                className="muted", id="conversation-live")]  # fmt: skip
        if live_at_s is not None
        else []
    )

    def pct(v: float) -> str:
        return f"{100 * float(v):.0f} %"

    call_rows = [
        ("Silence", f"{mmss(conv['silence_s'])} ({pct(conv['silence_share'])})"),
        ("Silences over 3 s", f"{conv['long_silences']} ({mmss(conv['long_silence_s'])} in all)"),
        ("Longest silence", mmss(conv["longest_silence_s"])),
        ("Overtalk", f"{mmss(conv['overtalk_s'])} ({pct(conv['overtalk_share'])})"),
    ]
    head = ["Speaker", "Talk time", "Share of talk", "Turns", "Longest monologue", "Interruptions"]
    rows = [
        [
            f"{spk} ({s['role']})",
            mmss(s["talk_time_s"]),
            pct(s["talk_ratio"]),
            str(s["turns"]),
            mmss(s["longest_monologue_s"]),
            str(s["interruptions"]),
        ]
        for spk, s in conv["speakers"].items()
    ]
    return html.Div(
        [
            *caption,
            html.Dl([x for k, v in call_rows for x in (html.Dt(k), html.Dd(v))]),
            html.Table(
                [html.Thead(html.Tr([html.Th(h) for h in head]))]
                + [html.Tbody([html.Tr([html.Td(c) for c in r]) for r in rows])],
                className="conversation",
            ),
        ],
        className="meta",
    )


def history_page() -> html.Div:
    def field(fid: str, label: str, **kw: Any) -> html.Label:
        return html.Label([label, dcc.Input(id=f"h-{fid}", debounce=True, **kw)])

    return html.Div(
        [
            html.H2("Call history"),
            html.Div(
                [
                    html.Label(
                        [
                            "started (days in this server's zone)",
                            dcc.DatePickerRange(
                                id="h-dates",
                                start_date_id="h-date-from",
                                end_date_id="h-date-to",
                                display_format="YYYY-MM-DD",
                                start_date_placeholder_text="from",
                                end_date_placeholder_text="to",
                                minimum_nights=0,
                                clearable=True,
                                first_day_of_week=1,
                            ),
                        ]
                    ),
                    html.Label(
                        [
                            "status",
                            dcc.Dropdown(
                                id="h-status",
                                options=[{"label": "any", "value": ""}]
                                + [{"label": v, "value": v} for v in get_args(CallStatus)],
                                value="",
                                clearable=False,
                            ),
                        ]
                    ),
                    field("agent", "agent", type="text"),
                    field("customer", "customer", type="text"),
                    field("queue", "queue", type="text"),
                    field(
                        "min_anger_share", "min anger share", type="number", min=0, max=1, step=0.05
                    ),
                    html.Label(
                        [
                            "alerted",
                            dcc.Dropdown(
                                id="h-alerted",
                                options=[
                                    {"label": "any", "value": ""},
                                    {"label": "yes", "value": "true"},
                                    {"label": "no", "value": "false"},
                                ],
                                value="",
                                clearable=False,
                            ),
                        ]
                    ),
                    field("min_duration_s", "min duration (s)", type="number", min=0),
                    field("max_duration_s", "max duration (s)", type="number", min=0),
                    field("min_long_silences", "min silences > 3 s", type="number", min=0, step=1),
                    field(
                        "min_overtalk_share", "min overtalk share", type="number", min=0, max=1,
                        step=0.05,
                    ),
                ],
                className="filters",
            ),
            html.Div(id="h-error", className="error"),
            html.Div(
                [
                    html.Span(id="h-total"),
                    " · ",
                    html.A("Export CSV", id="h-export", href="/export/calls.csv"),
                ]
            ),
            dash_table.DataTable(
                id="h-table",
                columns=[
                    {
                        "id": i,
                        "name": n,
                        "type": "numeric" if t == "numeric" else "text",
                        **({"presentation": "markdown"} if t == "markdown" else {}),
                    }
                    for i, n, t in HISTORY_COLUMNS
                ],
                page_action="custom",
                page_current=0,
                page_size=20,
                sort_action="custom",
                sort_mode="single",
                sort_by=[{"column_id": "started_at", "direction": "desc"}],
                markdown_options={"link_target": "_self"},
                style_cell={"fontFamily": "sans-serif", "fontSize": 13},
            ),
        ]
    )


def alerts_page() -> html.Div:
    return html.Div(
        [
            html.H2("Alerts"),
            dcc.Checklist(id="inbox-resolved", value=[],
                          options=[{"label": " also resolved in the last 24 h", "value": "on"}]),
            html.P(id="inbox-count", className="muted"),
            html.Div(id="inbox"),
            dcc.Store(id="inbox-sig"),
            dcc.Store(id="inbox-times"),  # id -> raised_at, resolved_at: the ages tick from it
        ]
    )  # fmt: skip


def _inbox_row(a: dict[str, Any], can_ack: bool) -> html.Tr:
    return html.Tr(
        [
            html.Td(badge(a["severity"], a["severity"])),
            html.Td(badge(a["status"], "status")),
            html.Td(_age(a), id={"type": "inbox-age", "alert": a["id"]}),
            html.Td(dcc.Link(a["call_id"], href=f"/call/{a['call_id']}")),
            html.Td(f"{a['rule']}: {a['message']}"),
            html.Td(when(a["raised_at"])),
            html.Td(ack_state(a, can_ack, note=True)),
        ],
        className="inbox-row",
        **{"data-alert": a["id"]},
    )


def _age(a: dict[str, Any]) -> str:
    """How long an open alert has waited (m:ss), or how long a resolved one was open."""
    raised = datetime.fromisoformat(a["raised_at"])
    end = datetime.fromisoformat(a["resolved_at"]) if a.get("resolved_at") else None
    waited = ((end or datetime.now(raised.tzinfo)) - raised).total_seconds()
    return ("open " if end is None else "was open ") + mmss(max(0.0, waited))


SHIFT_HOURS = (1, 4, 8, 12, 24)
TEAM_COLUMNS = (("active", "active now"), ("calls", "calls"),
                ("angry_share", "angry customer"), ("open_alerts", "open alerts"),
                ("aht_s", "avg handling"))  # fmt: skip


def _shift_start(hours: int | None) -> datetime:
    return datetime.now().astimezone() - timedelta(hours=hours or 8)


def _shift_picker(pid: str) -> html.Label:
    return html.Label(["shift: the last", dcc.Dropdown(
        id=pid, options=[{"label": f"{h} h", "value": h} for h in SHIFT_HOURS], value=8,
        clearable=False, persistence=True, persistence_type="session")])  # fmt: skip


def team_page() -> html.Div:
    return html.Div(
        [
            html.H2("Team"),
            html.Div([_shift_picker("team-hours")], className="filters"),
            html.P(f"Calls started in the shift or still active. 'Angry customer': an alert, or "
                   f"the customer angry in ≥ {ANGRY_SHARE:.0%} of confident windows. Average "
                   "handling time over the calls that are over. Customer emotion only.",
                   className="muted"),  # fmt: skip
            html.H3("Queues"),
            html.Div(id="team-queues"),
            html.H3("Agents"),
            html.Div(id="team-agents"),
            dcc.Store(id="team-sig"),
        ]
    )


def agent_page(agent: str, settings: Settings) -> html.Div:
    policy = ("Customer emotion on this agent's calls; the agent's own emotion is not inferred "
              "(CALLSENSE_EMOTION_ROLES=customer).")  # fmt: skip
    if "agent" in settings.emotion_roles:
        policy = (
            "Customer emotion on this agent's calls. Agent emotion is enabled for this "
            "deployment (CALLSENSE_EMOTION_ROLES) and shows on each call's page."
        )
    return html.Div(
        [
            html.H2(f"Agent {agent}"),
            dcc.Store(id="agent-id", data=agent),
            html.Div([_shift_picker("agent-hours")], className="filters"),
            html.P(policy, className="muted", id="agent-policy"),
            html.Div(id="agent-summary"),
            html.Div(id="agent-calls"),
            dcc.Store(id="agent-sig"),
        ]
    )


def rules_page() -> html.Div:
    return html.Div(
        [
            html.H2("Alert rules"),
            html.P(id="rules-source", className="muted"),
            html.P("A JSON list of rules (fields in docs/dashboard.md). Saving makes a new "
                   "version that every worker takes within seconds; versions are kept.",
                   className="muted"),  # fmt: skip
            dcc.Textarea(id="rules-text", className="rules-text", spellCheck=False),
            html.Div(
                [
                    dcc.Input(id="rules-note", placeholder="what changed (optional)",
                              maxLength=500, className="ack-note"),  # fmt: skip
                    html.Button("Validate", id="rules-validate", className="ack-btn"),
                    html.Button("Save as new version", id="rules-save", className="ack-btn"),
                ],
                className="filters",
            ),
            html.Div(id="rules-msg", className="flash"),
            html.H3("Versions"),
            html.Div(id="rules-versions"),
        ]
    )


def _versions_table(versions: list[dict[str, Any]]) -> Any:
    if not versions:
        return html.P("Never edited: the environment's rules are in force.", className="muted")
    head = html.Tr([html.Th(t) for t in ("version", "saved", "by", "note", "rules")])
    rows = [html.Tr([html.Td(str(v["version"])), html.Td(when(v["created_at"])),
                     html.Td(v["created_by"]), html.Td(v["note"] or "-"),
                     html.Td(", ".join(r.get("name", "?") for r in v["rules"]))],
                    className="rules-version")
            for v in versions]  # fmt: skip
    return html.Table([head, *rows], className="inbox")


def _team_cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key == "angry_share":
        return f"{value:.0%}"
    if key == "aht_s":
        return mmss(value)
    return str(value)


def _team_table(rows: list[dict[str, Any]], name: str, link: str | None = None) -> Any:
    if not rows:
        return html.P("No calls in this shift.", className="muted")
    head = html.Tr([html.Th(name), *(html.Th(t) for _, t in TEAM_COLUMNS)])
    body = []
    for r in rows:
        key = r["key"] or "(none)"
        first = dcc.Link(key, href=f"{link}{r['key']}") if link and r["key"] else key
        body.append(html.Tr([html.Td(first), *(html.Td(_team_cell(k, r[k]))
                                                for k, _ in TEAM_COLUMNS)],
                            className="team-row", **{"data-key": key}))  # fmt: skip
    return html.Table([head, *body], className="inbox team")


def upload_page() -> html.Div:
    return html.Div(
        [
            html.H2("One-off analysis"),
            html.P(
                "Drop a WAV, FLAC, OGG or MP3 recording (≤ 50 MB); it is analysed with the offline "
                "path (same stages and model as the stream) and not stored."
            ),
            dcc.Upload(
                id="upload",
                children=html.Div(["Drop a file here or ", html.A("choose")]),
                className="upload",
                max_size=UPLOAD_MAX_BYTES,
                multiple=False,
            ),
            dcc.Loading(html.Div(id="upload-result")),
        ]
    )


def webhooks_page() -> html.Div:
    return html.Div(
        [
            html.H2("Webhook deliveries"),
            html.P("Every attempt to deliver an alert change (newest first).", className="muted"),
            dash_table.DataTable(
                id="wh-table",
                columns=[
                    {"id": k, "name": k}
                    for k in (
                        "created_at",
                        "event_id",
                        "alert_id",
                        "url",
                        "attempt",
                        "status_code",
                        "ok",
                        "error",
                    )
                ],
                page_size=25,
                style_cell={"fontFamily": "monospace", "fontSize": 12, "textAlign": "left"},
            ),
        ]
    )


def day_bounds(first: str | None, last: str | None) -> dict[str, datetime]:
    """The picked days (``YYYY-MM-DD``, the dashboard host's zone) as the search's half-open
    interval: from the first day's midnight to the midnight after the last day."""
    out = {}
    if first:
        out["started_from"] = datetime.fromisoformat(first[:10]).astimezone()
    if last:
        out["started_to"] = (datetime.fromisoformat(last[:10]) + timedelta(days=1)).astimezone()
    return out


def _history_query(
    values: dict[str, Any],
    page: int,
    sort_by: list[dict] | None,
    days: tuple[str | None, str | None] = (None, None),
) -> CallQuery:
    data: dict[str, Any] = {k: v for k, v in values.items() if v not in (None, "")}
    data.update(day_bounds(*days))
    sort = (sort_by or [{"column_id": "started_at", "direction": "desc"}])[0]
    col = "call_id" if sort["column_id"] == "call_link" else sort["column_id"]
    data.update(
        sort=col,
        order="asc" if sort["direction"] == "asc" else "desc",
        limit=20,
        offset=max(0, int(page or 0)) * 20,
    )
    return CallQuery.model_validate(data)


def _data_url(mime: str, text: str) -> str:
    return f"data:{mime};charset=utf-8;base64," + base64.b64encode(text.encode()).decode()


def _upload_verdict(analysis: Any) -> html.Div:
    """What a one-off analysis found, in words: per speaker whose emotion was inferred, the
    dominant emotion over its windows and its anger share (also for a single window)."""
    summary = analysis.summary()["summary"]
    lines = [f"{analysis.source}: {mmss(analysis.duration_s)}, {analysis.channels} channel(s)"]
    for spk, s in summary["speakers"].items():
        if not s["windows"]:
            lines.append(f"{spk} ({s['role']}): {mmss(s['talk_time_s'])} of speech, no emotion "
                         "inferred for this role")  # fmt: skip
            continue
        mean = s["mean_probabilities"].get(s["dominant"], 0.0)
        lines.append(
            f"{spk} ({s['role']}): mostly {s['dominant']} (mean probability {mean:.0%}) over "
            f"{s['windows']} window{'s' if s['windows'] != 1 else ''}; angry in "
            f"{s['shares'].get('angry', 0.0):.0%} of them, peak anger {s['peak_anger']:.0%}"
        )
    return html.Div([html.P(line) for line in lines], id="upload-verdict", className="meta")


def _window_dicts(results: list[Any]) -> list[dict[str, Any]]:
    out = []
    for r in results:
        if dataclasses.is_dataclass(r):
            d = dataclasses.asdict(r)  # type: ignore[arg-type]
        elif hasattr(r, "model_dump"):
            d = r.model_dump()
        else:
            d = dict(r)
        d.setdefault("uncertain", False)
        out.append(d)
    return out


# ----------------------------------------------------------------------------------------- app
PAGE_PATHS = frozenset(
    {"/", "/alerts", "/team", "/rules", "/history", "/upload", "/webhooks"}
)
DASH_PREFIXES = ("/_dash-", "/_reload-hash", "/_favicon.ico", "/assets/")


def install_known_paths(server: Flask) -> None:
    """Dash answers every path with its page shell; only the dashboard's pages get it, any
    other path is a 404 (JSON under /api)."""

    @server.before_request
    def _known_path() -> Any:
        path = request.path
        rule = request.url_rule
        dash_catch_all = rule is None or rule.rule in ("/", "/<path:path>")
        if not dash_catch_all or path in PAGE_PATHS or path.startswith(DASH_PREFIXES):
            return None
        for prefix in ("/call/", "/agent/"):
            if path.startswith(prefix) and re.match(ID_PATTERN, path[len(prefix) :]):
                return None
        if path.startswith("/api/"):
            return Response('{"error": "not found"}', status=404, mimetype="application/json")
        return Response("Not found.", status=404, mimetype="text/plain")


def create_app(settings: Settings = None, *, require_login: bool = False, sf: Any = None) -> Dash:
    """Build the Dash app (its Flask server is ``app.server``)."""
    from callsense.settings import get_settings

    settings = settings or get_settings()
    if sf is None:
        sf = session_factory(make_engine(settings.effective_database_url))
    server = Flask(__name__)
    key = settings.dashboard_secret_key
    server.secret_key = key.get_secret_value() if key else secrets.token_hex(32)
    server.config.update(
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=int(UPLOAD_MAX_BYTES * 1.4),
    )
    install_auth(server, settings, require_login)
    install_known_paths(server)
    install_microphone(server, settings)
    notifier = AckNotifier(settings, sf)
    token = settings.api_token.get_secret_value() if settings.api_token else None
    server.register_blueprint(make_api(sf, lambda: token, on_ack=notifier))
    install_error_handlers(server)

    recordings = Recordings(settings.data_dir / "recordings")

    @server.get("/recordings/<call_id>.wav")
    def recording(call_id: str) -> Any:
        path = recordings.wav(call_id) if re.match(ID_PATTERN, call_id) else None
        if path is None:
            return Response("No recording of this call.", status=404, mimetype="text/plain")
        return send_file(path, mimetype="audio/wav", conditional=True, max_age=0)

    @server.get("/export/calls.csv")
    def export_csv() -> Any:
        try:
            q = parse_query(CallQuery, request.args)
        except ValueError as exc:
            return Response(str(exc), status=400, mimetype="text/plain")
        with sf() as s:
            body = calls_csv(s, q)
        return Response(
            body,
            mimetype="text/csv",
            headers={"Content-Disposition": "attachment; filename=calls.csv"},
        )

    app = Dash(
        __name__,
        server=server,
        title="callsense",
        update_title=None,
        suppress_callback_exceptions=True,
        assets_folder=str(ASSETS),
    )
    app.callsense_notifier = notifier  # type: ignore[attr-defined]
    nav = html.Nav(
        [
            html.Span("callsense", className="brand"),
            dcc.Link("Live", href="/"),
            dcc.Link("Alerts", href="/alerts"),
            dcc.Link("Team", href="/team"),
            dcc.Link("Rules", href="/rules"),
            dcc.Link("History", href="/history"),
            dcc.Link("Upload", href="/upload"),
            dcc.Link("Webhooks", href="/webhooks"),
            html.A("Microphone", href="/microphone"),
            html.A("Sign out", href="/logout", className="right") if require_login else None,
        ]
    )
    app.layout = html.Div(
        [
            dcc.Location(id="url"),
            nav,
            dcc.Interval(id="tick", interval=settings.dashboard_poll_ms),
            dcc.Interval(id="health-tick", interval=5000),
            html.Div(id="pipeline-banner"),
            html.Div(id="ack-msg", className="flash"),
            html.Div(id="alert-toast", className="toast", role="alert"),
            dcc.Store(id="live-alerts"),
            html.Main(id="page"),
            dcc.Graph(id="plotly-preload", style={"display": "none"}),
        ]
    )

    @app.callback(Output("pipeline-banner", "children"), Input("health-tick", "n_intervals"))
    def banner(_n: int | None) -> Any:
        from callsense.storage.health import pipeline_health

        with sf() as s:
            h = pipeline_health(s)
        if h["up"]:
            lags = [w["audio_lag"] for w in h["workers"] if w["audio_lag"] is not None]
            lag = f", audio lag {sum(lags)} chunks" if lags else ""
            n = len(h["workers"])
            return html.Div(f"pipeline up: {n} worker{'s' * (n != 1)}{lag}", className="muted")
        age = h["newest_heartbeat_age_s"]
        since = "has ever reported" if age is None else f"has reported for {age:.0f} s"
        return html.Div(
            f"Pipeline down: no stream worker {since}; live data is stale.",
            className="banner-down",
            role="alert",
        )

    @app.callback(Output("page", "children"), Input("url", "pathname"))
    def route(path: str | None) -> Any:
        path = path or "/"
        if path == "/":
            return live.layout()
        if path.startswith("/call/"):
            call_id = path[len("/call/") :]
            if not re.match(ID_PATTERN, call_id):
                return html.Div("Malformed call id.", className="error")
            return call_page(call_id, recordings.wav(call_id) is not None)
        if path.startswith("/agent/"):
            agent = path[len("/agent/") :]
            if not re.match(ID_PATTERN, agent):
                return html.Div("Malformed agent id.", className="error")
            return agent_page(agent, settings)
        pages = {"/history": history_page, "/upload": upload_page, "/webhooks": webhooks_page,
                 "/alerts": alerts_page, "/team": team_page, "/rules": rules_page}  # fmt: skip
        if path in pages:
            return pages[path]()
        return html.Div(f"No page at {path}.", className="error")

    live.register(app, sf, lambda: can_act(settings), lambda a: acknowledge_alert(a, None))

    @app.callback(Output("live-alerts", "data"), Input("tick", "n_intervals"),
                  State("live-alerts", "data"))  # fmt: skip
    def alert_feed(_n: int | None, was: list[dict[str, Any]] | None) -> Any:
        """The open alerts of the live calls, on every page: the notifier below reads them."""
        with sf() as s:
            now = live_alerts(s)
        if now == was:
            raise PreventUpdate
        return now

    app.clientside_callback(NOTIFY_JS, Output("alert-toast", "children"),
                            Input("live-alerts", "data"))  # fmt: skip
    app.clientside_callback(  # the choice lives in the browser; the click lets audio start
        """function(v) { const on = (v || []).includes("on");
        window.localStorage.setItem("callsense.sound", on ? "on" : "off");
        if (on) { window.__callsenseAudio = window.__callsenseAudio || new AudioContext();
                  window.__callsenseAudio.resume(); }
        return window.dash_clientside.no_update; }""",
        Output("sound-on", "title"),
        Input("sound-on", "value"),
    )
    app.clientside_callback(
        """function(n) { if (n && "Notification" in window) { Notification.requestPermission(); }
        return window.dash_clientside.no_update; }""",
        Output("notify-permission", "title"),
        Input("notify-permission", "n_clicks"),
    )

    @app.callback(
        Output("call-meta", "children"),
        Output("call-graph", "figure"),
        Output("call-conversation", "children"),
        Output("call-alerts", "children"),
        Output("call-sig", "data"),
        Input("tick", "n_intervals"),
        Input("call-id", "data"),
        State("call-sig", "data"),
    )
    def call_view(_n: int | None, call_id: str, sig: str | None) -> Any:
        with sf() as s:
            d = call_detail(s, call_id)
        if d is None:
            return html.Div("No such call.", className="error"), dash.no_update, [], [], None
        new = digest(d)
        if new == sig:
            raise PreventUpdate
        meta = html.Dl(
            [
                item
                for k in (*CSV_FIELDS[1:], "channels", "source")
                for item in (html.Dt(label(k)), html.Dd(shown(k, d.get(k))))
            ]
        )
        fig = trajectory_figure(d["windows"], d["speakers"], d["alerts_list"])
        can_ack = can_act(settings)
        alerts = [alert_item(a, can_ack) for a in d["alerts_list"]] or html.P(
            "No alerts.", className="muted"
        )
        final = (d.get("summary") or {}).get("conversation")
        live = (d.get("extra") or {}).get("conversation_live")
        if final or not live:
            conversation = conversation_view(final)
        else:
            conversation = conversation_view(live["metrics"], live["at_ms"] / 1000.0)
        return meta, fig, conversation, alerts, new

    @app.callback(
        Output("inbox", "children"),
        Output("inbox-count", "children"),
        Output("inbox-sig", "data"),
        Output("inbox-times", "data"),
        Input("tick", "n_intervals"),
        Input("inbox-resolved", "value"),
        State("inbox-sig", "data"),
    )
    def inbox(_n: int | None, resolved: list[str] | None, sig: str | None) -> Any:
        """Re-rendered only when an alert changes, so a note being typed survives the ticks."""
        since = datetime.now().astimezone() - timedelta(hours=24) if resolved else None
        with sf() as s:
            rows = inbox_alerts(s, since)
        can_ack = can_act(settings)
        keys = ("id", "status", "severity", "acknowledged_by", "message")
        new = digest([[{k: a.get(k) for k in keys} for a in rows], can_ack])
        if new == sig:
            raise PreventUpdate
        live = [a for a in rows if a["status"] != "resolved"]
        unacked = sum(not a["acknowledged_by"] for a in live)
        critical = sum(a["severity"] == "critical" for a in live)
        count = (f"{len(live)} open ({critical} critical), {unacked} not acknowledged; "
                 "open first, most severe first, longest waiting first")  # fmt: skip
        if not rows:
            table: Any = html.P("No open alerts.", className="muted")
        else:
            table = html.Table([_inbox_row(a, can_ack) for a in rows], className="inbox")
        times = {a["id"]: {k: a[k] for k in ("raised_at", "resolved_at")} for a in rows}
        return table, count, new, times

    @app.callback(
        Output({"type": "inbox-age", "alert": ALL}, "children"),
        Input("tick", "n_intervals"),
        State({"type": "inbox-age", "alert": ALL}, "id"),
        State("inbox-times", "data"),
        prevent_initial_call=True,
    )
    def inbox_ages(_n: int | None, ids: list[dict[str, str]], times: dict | None) -> Any:
        if not ids or not times:
            raise PreventUpdate
        return [_age(times[i["alert"]]) if i["alert"] in times else "-" for i in ids]

    @app.callback(
        Output("team-queues", "children"),
        Output("team-agents", "children"),
        Output("team-sig", "data"),
        Input("tick", "n_intervals"),
        Input("url", "pathname"),
        Input("team-hours", "value"),
        State("team-sig", "data"),
    )
    def team(_n: int | None, path: str | None, hours: int | None, sig: str | None) -> Any:
        if path != "/team":
            raise PreventUpdate
        with sf() as s:
            calls = shift_calls(s, _shift_start(hours))
        queues, agents = team_overview(calls, "queue"), team_overview(calls, "agent_id")
        new = digest([queues, agents])
        if new == sig:  # unchanged: links stay clickable between ticks
            raise PreventUpdate
        return _team_table(queues, "queue"), _team_table(agents, "agent", "/agent/"), new

    @app.callback(
        Output("agent-summary", "children"),
        Output("agent-calls", "children"),
        Output("agent-sig", "data"),
        Input("tick", "n_intervals"),
        Input("agent-hours", "value"),
        State("agent-id", "data"),
        State("agent-sig", "data"),
    )
    def agent_view(_n: int | None, hours: int | None, agent: str | None, sig: str | None) -> Any:
        if not agent:
            raise PreventUpdate
        with sf() as s:
            calls = shift_calls(s, _shift_start(hours), agent)
        new = digest(calls)
        if new == sig:
            raise PreventUpdate
        summary = _team_table([{"key": agent, **summarise(calls)}], "agent")
        if not calls:
            return summary, html.P("No calls in this shift.", className="muted"), new
        head = html.Tr([html.Th(t) for t in ("call", "status", "started", "duration",
                                              "customer anger", "alerts")])  # fmt: skip
        rows = [html.Tr([html.Td(dcc.Link(c["call_id"], href=f"/call/{c['call_id']}")),
                         html.Td(c["status"]), html.Td(when(c["started_at"])),
                         html.Td(mmss(c["duration_s"])), html.Td(shown("anger_share",
                                                                       c["anger_share"])),
                         html.Td(str(c["alerts"]))], className="agent-call")
                for c in calls]  # fmt: skip
        return summary, html.Table([head, *rows], className="inbox"), new

    @app.callback(
        Output("rules-text", "value"),
        Output("rules-source", "children"),
        Output("rules-versions", "children"),
        Output("rules-save", "disabled"),
        Input("url", "pathname"),
        Input("rules-msg", "children"),
    )
    def rules_view(path: str | None, _msg: Any) -> Any:
        """The rules in force as editable JSON, where they come from, and the versions."""
        if path != "/rules":
            raise PreventUpdate
        from callsense.processors.alerts import parse_rules, rules_json

        with sf() as s:
            cur = current_rules(s)
            versions = rule_versions(s)
        if cur:
            rules, source = cur["rules"], (f"In force: version {cur['version']}, saved by "
                                           f"{cur['created_by']} {when(cur['created_at'])}.")
        else:
            rules = rules_json(parse_rules(settings.alert_rules))
            source = ("In force: the environment's rules (CALLSENSE_ALERT_RULES, or the "
                      "defaults when it is empty).")  # fmt: skip
        read_only = not can_act(settings)
        if read_only:
            source += " Read-only: only supervisors save rules."
        text = json.dumps(rules, indent=2)
        if ctx.triggered_id == "rules-msg":  # after validate/save, keep what the user typed
            text = dash.no_update
        return text, source, _versions_table(versions), read_only

    @app.callback(
        Output("rules-msg", "children"),
        Input("rules-validate", "n_clicks"),
        Input("rules-save", "n_clicks"),
        State("rules-text", "value"),
        State("rules-note", "value"),
        prevent_initial_call=True,
    )
    def rules_edit(_v: int | None, _s: int | None, text: str | None, note: str | None) -> Any:
        from callsense.processors.alerts import parse_rules, rules_json

        if not (text or "").strip():
            return "Empty: write the rules as a JSON list (an empty list [] turns alerts off)."
        try:
            rules = parse_rules(text)
        except ValueError as exc:
            return f"Not saved: {exc}"
        names = ", ".join(r.name for r in rules) or "none"
        if ctx.triggered_id == "rules-validate":
            return f"Valid: {len(rules)} rule(s) ({names})."
        if not can_act(settings):
            return "Analysts cannot change the rules (read-only)."
        with sf() as s, s.begin():
            version = save_rules(s, rules_json(rules), current_user(settings), note)
        return f"Saved as version {version}: {names}. Workers take it within seconds."

    @app.callback(
        Output("ack-msg", "children"),
        Input({"type": "ack", "alert": ALL}, "n_clicks"),
        State({"type": "ack-note", "alert": ALL}, "value"),
        prevent_initial_call=True,
    )
    def ack(clicks: list[int | None], _notes: list[str | None]) -> Any:
        trig = ctx.triggered_id
        if not trig or not any(t.get("value") for t in ctx.triggered):
            raise PreventUpdate
        note = next((st.get("value") for st in ctx.states_list[0]
                     if st["id"]["alert"] == trig["alert"]), None)  # fmt: skip
        return acknowledge_alert(trig["alert"], note)

    def acknowledge_alert(alert_id: str, note: str | None) -> str:
        """Acknowledge as the signed-in user (supervisors only), then notify; the outcome in
        words."""
        if not can_act(settings):
            return "Analysts cannot acknowledge alerts (read-only)."
        user = current_user(settings)
        try:
            with sf() as s, s.begin():
                done = acknowledge(s, alert_id, user, note=note)
        except ValueError as exc:
            return str(exc)
        if done is None:
            return "Already acknowledged, or resolved."
        notifier(done)
        return f"Alert acknowledged by {user}."

    @app.callback(
        Output("h-table", "data"),
        Output("h-table", "page_count"),
        Output("h-total", "children"),
        Output("h-error", "children"),
        Output("h-export", "href"),
        [Input(f"h-{f}", "value") for f in HISTORY_FIELDS],
        Input("h-dates", "start_date"),
        Input("h-dates", "end_date"),
        Input("h-table", "page_current"),
        Input("h-table", "sort_by"),
    )
    def history(*args: Any) -> Any:
        values = dict(zip(HISTORY_FIELDS, args[: len(HISTORY_FIELDS)], strict=True))
        first, last, page, sort_by = args[len(HISTORY_FIELDS) :]
        try:
            q = _history_query(values, page, sort_by, (first, last))
        except ValueError as exc:
            msg = "; ".join(
                f"{e['loc'][0]}: {e['msg']}" for e in getattr(exc, "errors", lambda: [])()
            ) or str(exc)
            return [], 0, "", msg, dash.no_update
        with sf() as s:
            res = search_calls(s, q)
        rows = [
            {
                **r,
                "call_link": f"[{r['call_id']}](/call/{r['call_id']})",
                "started_at": when(r.get("started_at")),
                "duration_s": mmss(r.get("duration_s")),
            }
            for r in res["items"]
        ]
        pages = max(1, -(-res["total"] // q.limit))
        export = q.model_dump(exclude={"limit", "offset"}, exclude_none=True, mode="json")
        return rows, pages, f"{res['total']} calls", "", "/export/calls.csv?" + urlencode(export)

    @app.callback(
        Output("wh-table", "data"), Input("tick", "n_intervals"), Input("url", "pathname")
    )
    def webhooks(_n: int | None, path: str | None) -> Any:
        if path != "/webhooks":
            raise PreventUpdate
        with sf() as s:
            rows = recent_deliveries(s, 500)
        return [
            {
                "created_at": when(r.created_at),
                "event_id": r.event_id,
                "alert_id": r.alert_id,
                "url": r.url,
                "attempt": r.attempt,
                "status_code": r.status_code,
                "ok": "yes" if r.ok else "no",
                "error": r.error,
            }
            for r in rows
        ]

    @app.callback(
        Output("upload-result", "children"),
        Input("upload", "contents"),
        State("upload", "filename"),
        prevent_initial_call=True,
    )
    def upload(contents: str | None, filename: str | None) -> Any:
        if not contents or not filename:
            raise PreventUpdate
        suffix = Path(filename).suffix.lower()
        if suffix not in UPLOAD_TYPES:
            return html.Div(
                f"Unsupported file type {suffix or '(none)'}: use WAV, FLAC, OGG or MP3.",
                className="error",
            )
        try:
            raw = base64.b64decode(contents.split(",", 1)[1], validate=True)
        except (IndexError, ValueError):
            return html.Div("The upload could not be decoded.", className="error")
        try:
            from callsense.processors.offline import analysis_csv, analysis_json, analyze_path
        except ImportError:
            return html.Div("Offline analysis is not available in this build.", className="error")
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
            try:
                analysis = analyze_path(Path(tmp), settings, call_id=Path(filename).stem)
            except Exception as exc:  # bad audio etc.: show the reason, keep serving
                log.warning("upload analysis failed: %s", exc)
                reason = str(exc).replace(tmp, "the file").replace(Path(tmp).name, "the file")
                if not isinstance(exc, ValueError):  # not an input error: no internals shown
                    reason = "internal error (logged)"
                return html.Div(f"Could not analyse {filename}: {reason}", className="error")
        finally:
            os.unlink(tmp)
        analysis.source = filename  # never the server's temporary path
        windows = _window_dicts(analysis.results)
        stem = Path(filename).stem
        downloads = html.P(
            [
                "Download: ",
                html.A("JSON", id="upload-json", download=f"{stem}.json",
                       href=_data_url("application/json", analysis_json(analysis))),
                " · ",
                html.A("CSV (one row per window)", id="upload-csv", download=f"{stem}.csv",
                       href=_data_url("text/csv", analysis_csv(analysis))),
            ]
        )  # fmt: skip
        conversation = [html.H3("Conversation"), conversation_view(analysis.conversation)]
        if not windows:
            roles = ", ".join(settings.emotion_roles)
            return html.Div(
                [
                    html.P(
                        f"No emotion windows for {filename}: emotion is inferred for these "
                        f"speaker roles only: {roles} (CALLSENSE_EMOTION_ROLES; agents' emotion "
                        "is off by default, EU AI Act Art. 5(1)(f)). A single voice in a mono "
                        "file counts as the agent; a stereo file needs at least a second of "
                        "customer speech.",
                        className="error",
                        id="upload-empty",
                    ),
                    *conversation,
                    downloads,
                ]
            )
        fig = trajectory_figure(windows, title=f"{filename}: {len(windows)} windows")
        return html.Div(
            [
                _upload_verdict(analysis),
                dcc.Graph(figure=fig, id="upload-graph"),
                *conversation,
                downloads,
            ],
            className="upload-ok",
        )

    return app
