"""RTTM input/output and diarization error rate with ``pyannote.metrics``.

Scoring used everywhere in callsense: **no forgiveness collar (0 s) and overlapped speech
scored** (``skip_overlap=False``), the strict setting of the published AMI figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

COLLAR = 0.0
SKIP_OVERLAP = False
SCORING = "collar 0.0 s, overlapped speech scored"


def write_rttm(turns: Iterable[tuple[str, float, float]], uri: str, path: Path | None) -> str:
    """RTTM text for ``(speaker, start, end)`` turns; written to ``path`` when given."""
    lines = [
        f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> {spk} <NA> <NA>"
        for spk, start, end in sorted(turns, key=lambda t: (t[1], t[0]))
        if end > start
    ]
    text = "\n".join(lines) + ("\n" if lines else "")
    if path is not None:
        Path(path).write_text(text)
    return text


def read_rttm(path: Path) -> dict[str, list[tuple[str, float, float]]]:
    """``{uri: [(speaker, start, end), ...]}`` from an RTTM file."""
    out: dict[str, list[tuple[str, float, float]]] = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0] != "SPEAKER":
            continue
        if len(parts) < 8:
            raise ValueError(f"{path}:{n}: malformed RTTM line")
        start, dur = float(parts[3]), float(parts[4])
        out.setdefault(parts[1], []).append((parts[7], start, start + dur))
    return out


def to_annotation(turns: Iterable[tuple[str, float, float]], uri: str) -> Any:
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, (spk, start, end) in enumerate(turns):
        if end > start:
            ann[Segment(start, end), i] = spk
    return ann


def der(
    reference: Iterable[tuple[str, float, float]],
    hypothesis: Iterable[tuple[str, float, float]],
    duration: float,
    uri: str = "call",
) -> dict[str, float]:
    """DER and its parts over [0, duration] (fractions of total reference speech)."""
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=COLLAR, skip_overlap=SKIP_OVERLAP)
    uem = Timeline([Segment(0.0, duration)], uri=uri)
    parts = metric(
        to_annotation(reference, uri), to_annotation(hypothesis, uri), uem=uem, detailed=True
    )
    total = parts["total"] or 1.0
    return {
        "der": float(parts["diarization error rate"]),
        "false_alarm": parts["false alarm"] / total,
        "missed": parts["missed detection"] / total,
        "confusion": parts["confusion"] / total,
        "reference_speech_s": float(parts["total"]),
    }
