"""Metrics against small cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from callsense.models.metrics import (
    confusion,
    evaluate_predictions,
    expected_calibration_error,
    unweighted_accuracy,
)


def _onehot(pred: list[int], c: int, conf: float = 1.0) -> np.ndarray:
    p = np.full((len(pred), c), (1 - conf) / (c - 1))
    p[np.arange(len(pred)), pred] = conf
    return p


def test_hand_computed_three_classes() -> None:
    # class 0: 3 items, 2 right; class 1: 1 item, right; class 2: 2 items, 0 right
    y = [0, 0, 0, 1, 2, 2]
    pred = [0, 0, 1, 1, 0, 1]
    m = evaluate_predictions(_onehot(pred, 3), np.array(y), ["a", "b", "c"])
    assert m["confusion"] == [[2, 1, 0], [0, 1, 0], [1, 1, 0]]
    assert m["wa"] == pytest.approx(3 / 6)
    assert m["ua"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    pc = m["per_class"]
    assert pc["a"]["precision"] == pytest.approx(2 / 3)  # predicted a: 3, correct 2
    assert pc["b"]["precision"] == pytest.approx(1 / 3)
    assert pc["a"]["f1"] == pytest.approx(2 / 3)
    assert pc["b"]["f1"] == pytest.approx(2 * (1 / 3) * 1 / (1 / 3 + 1))
    assert pc["c"]["f1"] == 0.0 and pc["c"]["support"] == 2
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_ua_ignores_absent_classes_and_differs_from_wa() -> None:
    y = np.array([0] * 8 + [1] * 2)
    pred = np.array([0] * 8 + [0] * 2)
    assert unweighted_accuracy(y, pred, 3) == pytest.approx(0.5)  # class 2 absent
    assert (pred == y).mean() == pytest.approx(0.8)


def test_ece_hand_computed() -> None:
    # two predictions at confidence 0.9 (one right), two at 0.6 (both right)
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    # bin (0.8,0.9]: acc 0.5 vs conf 0.9 → 0.4 * 2/4 ; bin (0.5,0.6]: acc 1 vs 0.6 → 0.4 * 2/4
    assert expected_calibration_error(probs, y) == pytest.approx(0.4)


def test_confusion_counts() -> None:
    cm = confusion(np.array([1, 1, 0]), np.array([1, 0, 0]), 2)
    assert cm.tolist() == [[1, 0], [1, 1]]


def test_angry_vs_rest_auc() -> None:
    from callsense.models.metrics import angry_vs_rest_auc

    labels = ["angry", "happy", "neutral"]
    y = np.array([0, 0, 1, 2, 2])
    probs = np.array([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8],
                      [0.3, 0.1, 0.6]])  # fmt: skip
    # angry scores 0.9, 0.4 vs others 0.5, 0.1, 0.3: 5 of 6 pairs ordered right
    assert angry_vs_rest_auc(probs, y, labels) == pytest.approx(5 / 6)
    assert angry_vs_rest_auc(probs, np.array([1, 1, 1, 2, 2]), labels) is None  # no angry
    assert angry_vs_rest_auc(probs[:, 1:], y - 1, labels[1:]) is None  # no angry class
    m = evaluate_predictions(probs, y, labels)
    assert m["angry_auc"] == pytest.approx(5 / 6)
    assert m["classes_present"] == labels


def test_angry_alert_signal_counts_confident_angry_windows() -> None:
    from callsense.models.metrics import angry_alert_signal

    labels = ["angry", "happy", "neutral", "sad"]
    probs = np.array([
        [0.90, 0.05, 0.03, 0.02],  # angry, confident: flagged, right
        [0.40, 0.30, 0.20, 0.10],  # angry arg-max below 0.45: not flagged (uncertain)
        [0.60, 0.10, 0.20, 0.10],  # flagged, wrong (neutral)
        [0.10, 0.10, 0.70, 0.10],
    ])  # fmt: skip
    sig = angry_alert_signal(probs, np.array([0, 0, 2, 2]), labels)
    assert sig == {"confidence": 0.45, "flagged": 2, "angry": 2, "precision": 0.5, "recall": 0.5}
    assert angry_alert_signal(probs[:, 1:], np.array([0, 0, 1, 1]), labels[1:]) is None
