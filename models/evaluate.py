"""Evaluate an :class:`EmotionModel` on manifest items (file level)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from callsense.models.audio import AudioError
from callsense.models.augment import telephone
from callsense.models.data import Item
from callsense.models.features import load_clip
from callsense.models.labels import LabelSet
from callsense.models.metrics import evaluate_predictions
from tqdm import tqdm

if TYPE_CHECKING:
    from callsense.models.inference import EmotionModel


def evaluate_items(
    model: EmotionModel, items: list[Item], channel: str = "clean", batch: int = 16
) -> dict[str, Any]:
    """Metrics over items whose label maps into the model's label set.

    Labels outside the set are counted under ``excluded`` (never silently dropped); files that
    cannot be read are listed under ``errors``.
    """
    ls = LabelSet.from_dict(model.config["label_set"])
    excluded: dict[str, int] = {}
    errors: list[dict[str, str]] = []
    xs, ys = [], []
    for it in tqdm(items, desc="load", unit="file", leave=False):
        idx = ls.index(it.emotion)
        if idx is None:
            excluded[it.emotion] = excluded.get(it.emotion, 0) + 1
            continue
        try:
            x = load_clip(it)
        except AudioError as exc:
            errors.append({"path": str(it.path), "error": str(exc)})
            continue
        if channel == "telephone":
            x = telephone(x)
        xs.append(x)
        ys.append(idx)
    if not xs:
        raise ValueError("no evaluable items: every label is outside the model's label set")
    probs = []
    for s in tqdm(range(0, len(xs), batch), desc="predict", unit="batch", leave=False):
        probs.append(model.predict(xs[s : s + batch], model.sample_rate))
    metrics = evaluate_predictions(np.concatenate(probs), np.array(ys), model.labels)
    metrics.update({"excluded": excluded, "errors": errors, "channel": channel})
    return metrics
