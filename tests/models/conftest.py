"""Fixtures of the model tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest


@pytest.fixture
def toy_features() -> Callable[..., Any]:
    """``make(seed, tel_noise=0.0)``: a FeatureSet of 240 clips by 12 speakers, 3 classes, one
    layer of 4 frames x 6 features, the class in feature 0 (+2 per class index); the ``tel``
    variant adds Gaussian noise of ``tel_noise`` to every feature."""
    from callsense.models.train import FeatureSet

    def make(seed: int, tel_noise: float = 0.0) -> Any:
        rng = np.random.default_rng(seed)
        n, t, d = 240, 4, 6
        spk = np.array([f"s{i % 12:02d}" for i in range(n)])
        y = np.arange(n) % 3
        states = rng.normal(size=(n, 1, t, d)).astype(np.float16)
        states[:, 0, :, 0] += y[:, None] * 2
        tel = states
        if tel_noise:
            tel = states + rng.normal(scale=tel_noise, size=states.shape).astype(np.float16)
        mask = np.ones((n, t), bool)
        return FeatureSet({"clean": states, "tel": tel}, {"clean": mask, "tel": mask}, y, spk)

    return make
