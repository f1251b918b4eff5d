"""Figures: per-speaker emotion trajectories (Plotly), live sparklines (SVG)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

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


SPARK_W, SPARK_H = 200, 56


def sparkline_svg(speakers: Sequence[dict[str, Any]]) -> str:
    """Anger probability of each speaker over the last minutes as a small SVG (a data URI for
    an ``<img>``): one path a speaker, 0 at the bottom and 1 at the top, no Plotly figure."""
    times = [t for s in speakers for t in s["t"]]
    t0, t1 = (min(times), max(times)) if times else (0.0, 1.0)
    span = (t1 - t0) or 1.0
    paths = []
    for s in speakers:
        pts = [f"{SPARK_W * (t - t0) / span:.1f},{SPARK_H * (1 - min(max(a, 0.0), 1.0)):.1f}"
               for t, a in zip(s["t"], s["anger"], strict=True)]  # fmt: skip
        if len(pts) == 1:  # one window: a short flat stroke at its level
            x, y = pts[0].split(",")
            pts = [f"{max(0.0, float(x) - 4):.1f},{y}", f"{float(x) + 4:.1f},{y}"]
        if pts:
            color = ROLE_COLORS.get(s["role"], OTHER)
            paths.append(f'<path d="M{" L".join(pts)}" fill="none" stroke="{color}" '
                         'stroke-width="1.5" vector-effect="non-scaling-stroke"/>')  # fmt: skip
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SPARK_W} {SPARK_H}" '
           f'preserveAspectRatio="none"><rect width="100%" height="100%" fill="#fafafa"/>'
           f'{"".join(paths)}</svg>')  # fmt: skip
    return "data:image/svg+xml;utf8," + quote(svg)
