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
