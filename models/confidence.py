"""Calibration (temperature scaling), the ``uncertain`` verdict and the temporal smoother."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Temperature minimising validation negative log-likelihood (grid + golden refinement),
    each row weighted by ``weights`` when given (e.g. so every corpus counts the same); 1.0 when
    there are no rows."""
    y = np.asarray(y, int)
    if not len(y):  # no validation rows (e.g. no training corpus could spare a speaker)
        return 1.0
    w = np.ones(len(y)) if weights is None else np.asarray(weights, float)

    def nll(t: float) -> float:
        p = softmax(logits, t)
        return float(-np.average(np.log(p[np.arange(len(y)), y] + 1e-12), weights=w))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 60))
    best = float(grid[int(np.argmin([nll(t) for t in grid]))])
    lo, hi = best / 1.15, best * 1.15
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        if nll(a) < nll(b):
            hi = b
        else:
            lo = a
    return float((lo + hi) / 2)


def verdict(
    probs_row: np.ndarray, labels: Sequence[str], threshold: float
) -> tuple[str, float, bool]:
    """(label, confidence, uncertain): the arg-max class, its probability, and whether that
    probability is below ``threshold``."""
    p = np.asarray(probs_row, dtype=float).reshape(-1)
    if p.shape[0] != len(labels):
        raise ValueError(f"probabilities have {p.shape[0]} classes, labels {len(labels)}")
    i = int(np.argmax(p))
    conf = float(p[i])
    return labels[i], conf, bool(conf < threshold)


class TemporalSmoother:
    """Smooths per-window probabilities over time for one speaker.

    ``mode="ema"``: exponential moving average, ``s = alpha * p + (1 - alpha) * s``.
    ``mode="majority"``: class frequencies of the arg-max over the last ``size`` windows
    (returned as a distribution). State is JSON-serialisable (``state()``/``from_state``) so a
    streaming worker can keep it in a table.
    """

    def __init__(
        self, labels: Sequence[str], alpha: float = 0.5, mode: str = "ema", size: int = 5
    ) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if mode not in {"ema", "majority"}:
            raise ValueError("mode must be 'ema' or 'majority'")
        self.labels = list(labels)
        self.alpha = float(alpha)
        self.mode = mode
        self.size = int(size)
        self._ema: np.ndarray | None = None
        self._history: list[int] = []
        self.count = 0

    def update(self, probs_row: np.ndarray) -> np.ndarray:
        p = np.asarray(probs_row, dtype=float).reshape(-1)
        if p.shape[0] != len(self.labels):
            raise ValueError(f"expected {len(self.labels)} probabilities, got {p.shape[0]}")
        if not np.all(np.isfinite(p)):
            raise ValueError("probabilities must be finite")
        self.count += 1
        self._ema = p.copy() if self._ema is None else self.alpha * p + (1 - self.alpha) * self._ema
        self._history = (self._history + [int(np.argmax(p))])[-self.size :]
        return self.value()

    def value(self) -> np.ndarray:
        if self._ema is None:
            return np.full(len(self.labels), 1.0 / len(self.labels))
        if self.mode == "ema":
            return self._ema.copy()
        counts = np.bincount(self._history, minlength=len(self.labels)).astype(float)
        return counts / counts.sum()

    def state(self) -> dict:
        return {
            "labels": self.labels,
            "alpha": self.alpha,
            "mode": self.mode,
            "size": self.size,
            "ema": None if self._ema is None else [float(v) for v in self._ema],
            "history": list(self._history),
            "count": self.count,
        }

    @classmethod
    def from_state(cls, d: dict) -> TemporalSmoother:
        s = cls(d["labels"], alpha=d["alpha"], mode=d.get("mode", "ema"), size=d.get("size", 5))
        s._ema = None if d.get("ema") is None else np.asarray(d["ema"], dtype=float)
        s._history = [int(v) for v in d.get("history", [])]
        s.count = int(d.get("count", 0))
        return s
