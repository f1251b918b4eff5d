"""Streaming speaker diarization for mono calls (see docs/diarization.md).

``StreamingDiarizer`` is a plain class on numpy arrays with per-call state; the CLI command
``callsense diarize`` streams a file through it. Heavy imports (torch, pyannote) happen only
when models are loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .cli import diarize_cmd
from .streaming import (
    AGENT_RULES,
    DiarizerConfig,
    SpeakerSegment,
    StreamingDiarizer,
    diarize_array,
)

__all__ = [
    "AGENT_RULES",
    "DiarizerConfig",
    "SpeakerSegment",
    "StreamingDiarizer",
    "diarize_array",
    "diarize_cmd",
    "load_models",
]


if TYPE_CHECKING:
    from .weights import DiarizationModels


def load_models(root: Path | None = None) -> DiarizationModels:
    """Load the packaged segmentation and CAM++ models (cached per process)."""
    from .weights import load_models as _load

    return _load(root)
