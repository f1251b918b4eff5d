"""Temperature scaling, verdict and the temporal smoother."""

from __future__ import annotations

import json

import numpy as np
import pytest
from callsense.models import TemporalSmoother, verdict
from callsense.models.confidence import fit_temperature, softmax


def test_temperature_recovers_overconfidence() -> None:
    rng = np.random.default_rng(0)
    n, c = 4000, 4
    true_logits = rng.normal(size=(n, c)) * 1.5
    y = np.array([rng.choice(c, p=p) for p in softmax(true_logits)])
    t = fit_temperature(true_logits * 3.0, y)  # a model 3x too confident
    assert t == pytest.approx(3.0, rel=0.15)


def test_verdict_threshold() -> None:
    labels = ["angry", "happy", "neutral", "sad"]
    assert verdict(np.array([0.1, 0.7, 0.1, 0.1]), labels, 0.45) == ("happy", 0.7, False)
    label, conf, uncertain = verdict(np.array([0.3, 0.3, 0.4, 0.0]), labels, 0.45)
    assert (label, uncertain) == ("neutral", True) and conf == pytest.approx(0.4)
    with pytest.raises(ValueError):
        verdict(np.array([0.5, 0.5]), labels, 0.5)


def test_ema_smoother_and_state_roundtrip() -> None:
    s = TemporalSmoother(["a", "b"], alpha=0.5)
    np.testing.assert_allclose(s.update(np.array([1.0, 0.0])), [1.0, 0.0])
    np.testing.assert_allclose(s.update(np.array([0.0, 1.0])), [0.5, 0.5])
    state = json.loads(json.dumps(s.state()))
    r = TemporalSmoother.from_state(state)
    np.testing.assert_allclose(r.update(np.array([0.0, 1.0])), [0.25, 0.75])
    np.testing.assert_allclose(s.update(np.array([0.0, 1.0])), [0.25, 0.75])


def test_majority_smoother() -> None:
    s = TemporalSmoother(["a", "b", "c"], mode="majority", size=3)
    for p in ([0.9, 0.1, 0], [0.2, 0.8, 0], [0.6, 0.4, 0], [0.1, 0.2, 0.7]):
        out = s.update(np.array(p))
    np.testing.assert_allclose(out, [1 / 3, 1 / 3, 1 / 3])  # last three: b, a, c
    with pytest.raises(ValueError):
        s.update(np.array([np.nan, 0.5, 0.5]))


def test_temperature_weights_and_no_rows() -> None:
    """Weights decide which rows the temperature serves; no rows means no scaling."""
    import numpy as np
    from callsense.models.confidence import fit_temperature

    logits = np.array([[4.0, 0.0], [4.0, 0.0], [4.0, 0.0], [4.0, 0.0]])
    y = np.array([0, 0, 0, 1])  # 3 of 4 right: the best temperature softens the logits
    sharp = fit_temperature(logits, y, weights=np.array([1.0, 1.0, 1.0, 1e-6]))
    soft = fit_temperature(logits, y)
    assert sharp > 0 and soft > 1.0 and soft > sharp
    assert fit_temperature(np.zeros((0, 2)), np.zeros(0)) == 1.0
