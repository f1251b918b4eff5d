"""The shared palette stays distinguishable for colour-blind readers; both chart makers use it."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from callsense.palette import EMOTION_COLORS, ROLE_COLORS, emotion_color

# Machado, Oliveira & Fernandes (2009), severity 1.0, on linear RGB
CVD = {
    "protanopia": [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                   [-0.003882, -0.048116, 1.051998]],
    "deuteranopia": [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                     [-0.011820, 0.042940, 0.968881]],
    "tritanopia": [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                   [0.004733, 0.691367, 0.303900]],
}  # fmt: skip
CALLCENTER = ("angry", "happy", "neutral", "sad")  # the shipped model's classes


def _linear(hex_color: str) -> np.ndarray:
    c = np.array([int(hex_color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _lab(rgb_linear: np.ndarray) -> np.ndarray:
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                    [0.0193, 0.1192, 0.9505]]) @ np.clip(rgb_linear, 0, 1)  # fmt: skip
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def min_distance(colors: dict[str, str], names: tuple[str, ...], vision: str | None) -> float:
    """Smallest CIE76 colour difference between any two of ``names`` as seen with ``vision``."""
    m = np.eye(3) if vision is None else np.array(CVD[vision])
    lab = {n: _lab(m @ _linear(colors[n])) for n in names}
    return min(float(np.linalg.norm(lab[a] - lab[b])) for a, b in itertools.combinations(names, 2))


@pytest.mark.parametrize("vision", [None, *CVD])
def test_the_model_classes_stay_apart_for_every_vision(vision: str | None) -> None:
    assert min_distance(EMOTION_COLORS, CALLCENTER, vision) > 20
    assert min_distance(ROLE_COLORS, ("customer", "agent"), vision) > 20


def test_the_old_red_green_palette_would_fail_the_check() -> None:
    """The check can fail: the former palette's anger red and disgust green merge for
    deuteranopes."""
    old = {"angry": "#d62728", "disgust": "#2ca02c"}
    assert min_distance(old, ("angry", "disgust"), "deuteranopia") < 20 < min_distance(
        old, ("angry", "disgust"), None
    )


def test_dashboard_and_analyze_plot_draw_with_the_palette(tmp_path: Path) -> None:
    import matplotlib.colors as mcolors
    from callsense.dashboard.figures import trajectory_figure
    from callsense.processors.offline import analyze_path, plot_trajectories

    from callsense.settings import Settings

    sample = Path(__file__).resolve().parents[2] / "ingest" / "samples"
    analysis = analyze_path(sample / "sample-escalation.flac", Settings())
    out = tmp_path / "plot.png"
    captured: list[str] = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.plot

    def spy(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        captured.append(mcolors.to_hex(kwargs["color"]).upper())
        return original(self, *args, **kwargs)

    matplotlib.axes.Axes.plot = spy  # type: ignore[method-assign]
    try:
        plot_trajectories(analysis, out)
    finally:
        matplotlib.axes.Axes.plot = original  # type: ignore[method-assign]
    assert out.stat().st_size > 0
    assert set(captured) == {emotion_color(lab) for lab in CALLCENTER}
    windows = [dataclasses.asdict(w) for w in analysis.results]
    fig = trajectory_figure(windows, analysis.speakers, [])
    line_colors = {t.line.color for t in fig.data if t.mode == "lines" and t.line.color}
    assert line_colors and line_colors <= set(EMOTION_COLORS.values())
