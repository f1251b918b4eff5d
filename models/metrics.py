"""Classification metrics for emotion recognition (numpy only, checked against hand-computed
cases in the tests).

* UA (unweighted accuracy) = mean per-class recall over classes present in the reference.
* WA (weighted accuracy) = plain accuracy.
* macro-F1 over classes present in the reference or the predictions.
* ECE = expected calibration error with equal-width confidence bins.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def unweighted_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = confusion(y_true, y_pred, n_classes)
    _, recall, _, support = per_class(cm)
    return float(recall[support > 0].mean())


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> float:
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            ece += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(ece)


def angry_vs_rest_auc(probs: np.ndarray, y_true: np.ndarray, labels: list[str]) -> float | None:
    """ROC AUC of p(angry) separating angry from every other class (the alerts' signal); None
    without an angry class, or when the references hold only one side."""
    if "angry" not in labels:
        return None
    k = labels.index("angry")
    positive = np.asarray(y_true) == k
    if positive.all() or not positive.any():
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(positive, probs[:, k]))


#: a window counts towards the anger alerts when it is labelled angry with at least this
#: calibrated confidence (the default CALLSENSE_UNCERTAIN_THRESHOLD; below it: "uncertain")
ALERT_CONFIDENCE = 0.45


def angry_alert_signal(
    probs: np.ndarray, y_true: np.ndarray, labels: list[str], confidence: float = ALERT_CONFIDENCE
) -> dict | None:
    """Precision and recall of the windows the alert rules count as angry (arg-max angry at
    ``confidence`` or more) against the angry references; None without an angry class."""
    if "angry" not in labels:
        return None
    k = labels.index("angry")
    flagged = (probs.argmax(axis=1) == k) & (probs.max(axis=1) >= confidence)
    positive = np.asarray(y_true) == k
    tp = int((flagged & positive).sum())
    return {
        "confidence": confidence,
        "flagged": int(flagged.sum()),
        "angry": int(positive.sum()),
        "precision": tp / int(flagged.sum()) if flagged.any() else None,
        "recall": tp / int(positive.sum()) if positive.any() else None,
    }


def evaluate_predictions(probs: np.ndarray, y_true: np.ndarray, labels: list[str]) -> dict:
    """All metrics for (N, C) probabilities and integer references."""
    y_true = np.asarray(y_true, int)
    y_pred = probs.argmax(axis=1)
    c = len(labels)
    cm = confusion(y_true, y_pred, c)
    precision, recall, f1, support = per_class(cm)
    present = support > 0
    in_play = present | (cm.sum(axis=0) > 0)
    return {
        "n": int(len(y_true)),
        "classes_present": [lab for lab, here in zip(labels, present, strict=True) if here],
        "angry_auc": angry_vs_rest_auc(probs, y_true, labels),
        "angry_alert": angry_alert_signal(probs, y_true, labels),
        "ua": float(recall[present].mean()),
        "wa": float((y_pred == y_true).mean()),
        "macro_f1": float(f1[in_play].mean()),
        "ece": expected_calibration_error(probs, y_true),
        "per_class": {
            lab: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, lab in enumerate(labels)
        },
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def plot_confusion(cm: np.ndarray, labels: list[str], out: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n({int(cm[i, j])})",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title or "confusion (row-normalised)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def write_json(obj: dict, out: str | Path) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(obj, indent=2) + "\n")
