"""callsense.models: the speech-emotion model (data, training, evaluation, inference).

Public API (heavy modules load on first use, so importing ``callsense.models.audio`` stays
light)::

    from callsense.models import EmotionModel, TemporalSmoother, verdict, AudioError
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from callsense.models.audio import AudioError
from callsense.models.confidence import TemporalSmoother, verdict

if TYPE_CHECKING:
    from callsense.models.inference import EmotionModel

__all__ = ["AudioError", "EmotionModel", "TemporalSmoother", "verdict"]


def __getattr__(name: str) -> Any:
    if name == "EmotionModel":
        from callsense.models.inference import EmotionModel

        return EmotionModel
    raise AttributeError(f"module 'callsense.models' has no attribute {name!r}")
