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
from callsense.models.speaker_norm import speaker_streams
from tqdm import tqdm

if TYPE_CHECKING:
    from callsense.models.inference import EmotionModel


def evaluate_items(
    model: EmotionModel,
    items: list[Item],
    channel: str = "clean",
    batch: int = 16,
    speaker_history: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics over items whose label maps into the model's label set.

    Labels outside the set are counted under ``excluded`` (never silently dropped); files that
    cannot be read are listed under ``errors``. For a model that normalises per speaker
    (``model.uses_speaker_state``) and ``speaker_history``, each speaker's clips are classified
    as one causal stream in a random order (``seed``), as the windows of a call would be;
    without it every clip is classified as its speaker's first.
    """
    ls = LabelSet.from_dict(model.config["label_set"])
    excluded: dict[str, int] = {}
    errors: list[dict[str, str]] = []
    xs, ys, spks = [], [], []
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
        spks.append(it.speaker)
    if not xs:
        raise ValueError("no evaluable items: every label is outside the model's label set")
    stateful = model.uses_speaker_state
    if stateful:
        parts: list[np.ndarray] = []
        for s in tqdm(range(0, len(xs), batch), desc="encode", unit="batch", leave=False):
            parts.extend(model.embed(xs[s : s + batch], model.sample_rate))
        probs = np.zeros((len(xs), len(model.labels)))
        for rows in speaker_streams(spks, seed):
            state = model.new_speaker_state() if speaker_history else None
            probs[rows] = model.predict_embedded([parts[i] for i in rows], [state] * len(rows))
    else:
        chunks = []
        for s in tqdm(range(0, len(xs), batch), desc="predict", unit="batch", leave=False):
            chunks.append(model.predict(xs[s : s + batch], model.sample_rate))
        probs = np.concatenate(chunks)
    metrics = evaluate_predictions(probs, np.array(ys), model.labels)
    metrics.update(
        {
            "excluded": excluded,
            "errors": errors,
            "channel": channel,
            "speaker_normalisation": (
                ("per speaker, clips in a random causal order" if speaker_history else "off")
                if stateful
                else "not used by this model"
            ),
        }
    )
    return metrics
