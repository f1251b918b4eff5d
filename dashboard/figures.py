"""Plotly figures: per-speaker emotion trajectories, live sparklines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from callsense.processors.conversation import merge_spans
from plotly.subplots import make_subplots

from callsense.palette import (
    OTHER,
    ROLE_COLORS,
    SEVERITY_COLORS,
    emotion_color,
)


def _uncertain_spans(ws: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
    return merge_spans(
        (w["start_ms"] / 1000.0, w["end_ms"] / 1000.0) for w in ws if w.get("uncertain")
    )


def trajectory_figure(
    windows: Sequence[dict[str, Any]],
    speakers: Sequence[dict[str, Any]] | None = None,
    alerts: Sequence[dict[str, Any]] = (),
    title: str | None = None,
) -> go.Figure:
    """One row per speaker: probability per class over call time (window centres), uncertain
    windows shaded grey and marked with an x, alert markers as dashed vertical lines."""
    by_spk: dict[str, list[dict[str, Any]]] = {}
    for w in windows:
        by_spk.setdefault(w["speaker"], []).append(w)
    order = [s["speaker"] for s in speakers or [] if s["speaker"] in by_spk]
    order += sorted(s for s in by_spk if s not in order)
    roles = {s["speaker"]: s.get("role") for s in speakers or []}
    if not order:
        fig = go.Figure()
        fig.update_layout(
            title=title or "no emotion windows yet", height=220, margin=dict(l=40, r=20, t=40)
        )
        return fig
    titles = [f"{s} ({roles.get(s) or by_spk[s][0].get('role') or 'unknown'})" for s in order]
    fig = make_subplots(
        rows=len(order), cols=1, shared_xaxes=True, subplot_titles=titles, vertical_spacing=0.12
    )
    shown: set[str] = set()
    for row, spk in enumerate(order, start=1):
        ws = sorted(by_spk[spk], key=lambda w: w["start_ms"])
        t = [(w["start_ms"] + w["end_ms"]) / 2000.0 for w in ws]
        classes = sorted({k for w in ws for k in (w.get("probabilities") or {})})
        for cls in classes:
            y = [
                float((w.get("smoothed_probabilities") or w.get("probabilities") or {}).get(cls, 0))
                for w in ws
            ]
            fig.add_trace(
                go.Scatter(
                    x=t,
                    y=y,
                    mode="lines",
                    name=cls,
                    legendgroup=cls,
                    showlegend=cls not in shown,
                    line=dict(color=emotion_color(cls), width=2),
                    hovertemplate=f"{spk} {cls} %{{y:.2f}} at %{{x:.1f}} s<extra></extra>",
                ),
                row=row,
                col=1,
            )
            shown.add(cls)
        unc = [w for w in ws if w.get("uncertain")]
        if unc:
            fig.add_trace(
                go.Scatter(
                    x=[(w["start_ms"] + w["end_ms"]) / 2000.0 for w in unc],
                    y=[1.04] * len(unc),
                    mode="markers",
                    name="uncertain window",
                    legendgroup="uncertain",
                    showlegend="uncertain" not in shown,
                    marker=dict(symbol="x", color="#555", size=7),
                    hovertemplate="uncertain (confidence %{customdata:.2f})<extra></extra>",
                    customdata=[w.get("confidence", 0) for w in unc],
                ),
                row=row,
                col=1,
            )
            shown.add("uncertain")
            for a, b in _uncertain_spans(ws):
                fig.add_vrect(
                    x0=a, x1=b, fillcolor="#999", opacity=0.12, line_width=0, row=row, col=1
                )
        fig.update_yaxes(range=[0, 1.1], title_text="p", row=row, col=1)
    for a in alerts:
        details = a.get("details") or {}
        ms = details.get("raised_call_ms", details.get("call_time_ms"))
        if ms is None:
            continue
        color = SEVERITY_COLORS["critical" if a.get("severity") == "critical" else "warning"]
        fig.add_vline(x=ms / 1000.0, line_dash="dash", line_color=color, line_width=2)
        fig.add_annotation(
            x=ms / 1000.0,
            y=1.0,
            yshift=22,
            yref="paper",
            text=f"⚠ {a['rule']}",
            showarrow=False,
            font=dict(color=color),
            yanchor="bottom",
        )
    fig.update_xaxes(title_text="call time (s)", row=len(order), col=1)
    fig.update_layout(
        title=title,
        height=240 * len(order) + 80,
        margin=dict(l=50, r=20, t=80, b=40),
        legend=dict(orientation="h", y=-0.15),
        uirevision="keep",
    )
    return fig


def sparkline(speakers: Sequence[dict[str, Any]]) -> go.Figure:
    """Anger probability of each speaker over the last minutes (tiny, static)."""
    fig = go.Figure()
    for s in speakers:
        fig.add_trace(
            go.Scatter(
                x=s["t"],
                y=s["anger"],
                mode="lines",
                name=s["role"],
                line=dict(width=1.5, color=ROLE_COLORS.get(s["role"], OTHER)),
            )
        )
    fig.update_layout(
        height=60,
        width=240,
        margin=dict(l=0, r=0, t=0, b=0),
        showlegend=False,
        xaxis=dict(visible=False),
        yaxis=dict(visible=False, range=[0, 1]),
        plot_bgcolor="#fafafa",
    )
    return fig
