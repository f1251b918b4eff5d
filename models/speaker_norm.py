"""Per-speaker reference normalisation: online, causal, safe for a speaker who keeps one emotion.

Why: a speaker's voice, microphone and line shift every pooled encoder feature by a
speaker-specific offset. Subtracting each speaker's running mean removes it (RAVDESS 4-class UA
80.6 → 87.2 in our cross-validation), but the running mean of a caller who is angry for the whole
call *is* anger, and subtracting it erases the anger (UA on such one-emotion histories fell to
55.7). A call-center product cannot trade the persistently angry caller for a better average.

What: iterative feature normalisation with a neutral reference (Busso et al., 2011), made causal.
Every window ``x`` of a speaker is standardised (``z``), a first-stage classifier gives
``p_ref(z)`` = probability of the reference classes (neutral, and calm where the label set has
it), and the speaker's reference mean is the p_ref-weighted running mean of the windows seen so
far, shrunk towards the training set's neutral mean ``mu_ref`` with ``prior`` pseudo-windows::

    acc += p_ref * z;  w += p_ref
    m    = (prior * mu_ref + acc) / (prior + w)
    z'   = z - (m - mu_ref)          # the second-stage classifier reads z'

A caller who is angry throughout contributes little weight (p_ref is small), so ``m`` stays near
``mu_ref`` and nothing is subtracted; a calm speaker's own neutral voice becomes the reference.
A speaker with no history (a lone clip, the first window of a call) is classified with no shift.
Measured on the 6 RAVDESS folds: see ``models/MODEL_CARD.md``.

State per speaker: ``acc`` (float32, one value per feature the head reads) and ``w``; it is carried
in the stream's per-call checkpoint (as base64: ~22 kB for 4 Whisper-base layers' means and
standard deviations, ~8 kB for the shipped model's 3 layers' means).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from callsense.models.head import (
    EmotionHead,
    StatsLinearHead,
    masked_stats,
    select_stats,
    stats_width,
)
from torch import nn


class ReferenceNormalizer:
    """One speaker's reference statistics; ``apply`` updates them with a window and returns the
    window's normalised features. Windows must be given in time order."""

    def __init__(self, dim: int) -> None:
        self.acc = np.zeros(dim, dtype=np.float32)
        self.weight = 0.0
        self.windows = 0

    def apply(self, z: np.ndarray, p_ref: float, prior: float, mu_ref: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float32)
        if z.shape != self.acc.shape:
            raise ValueError(f"feature size {z.shape} does not match the state's {self.acc.shape}")
        p = float(np.clip(p_ref, 0.0, 1.0))
        self.acc += np.float32(p) * z
        self.weight += p
        self.windows += 1
        m = (np.float32(prior) * mu_ref + self.acc) / np.float32(prior + self.weight)
        return z - (m - mu_ref)

    def state(self) -> dict[str, Any]:
        return {
            "acc": base64.b64encode(self.acc.astype("<f4").tobytes()).decode("ascii"),
            "weight": self.weight,
            "windows": self.windows,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> ReferenceNormalizer:
        acc = np.frombuffer(base64.b64decode(d["acc"]), dtype="<f4").astype(np.float32)
        self = cls(len(acc))
        self.acc = acc.copy()
        self.weight = float(d["weight"])
        self.windows = int(d["windows"])
        return self


def state_bound(model_config: dict[str, Any]) -> int:
    """Upper bound (bytes) of one speaker's :meth:`ReferenceNormalizer.state` as JSON for a model
    configuration (``model.json``); 0 for a model that keeps no per-speaker state. The stream
    budgets its per-call checkpoint with it."""
    head = model_config.get("head", {})
    if head.get("kind") != "stats_linear_refnorm":
        return 0
    stats = head.get("stats", "mean_std")
    feature_dim = stats_width(int(head["n_layers"]), int(head["dim"]), stats)
    return 4 * ((4 * feature_dim + 2) // 3) + 120  # base64 float32 + keys, weight, count


def normalise_sequence(
    z: np.ndarray, p_ref: np.ndarray, prior: float, mu_ref: np.ndarray
) -> np.ndarray:
    """Rows of one speaker in time order → normalised rows (what the stream computes)."""
    norm = ReferenceNormalizer(z.shape[1])
    return np.stack([norm.apply(row, p, prior, mu_ref) for row, p in zip(z, p_ref, strict=True)])


def speaker_streams(speakers: Sequence[str] | np.ndarray, seed: int) -> list[np.ndarray]:
    """Row indices of each speaker (sorted by speaker), in a random (seeded) order: how a corpus'
    clips, which have no time order, are replayed as the windows of one call per speaker."""
    rng = np.random.default_rng(seed)
    _, inverse, counts = np.unique(np.asarray(speakers), return_inverse=True, return_counts=True)
    grouped = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    return [rng.permutation(rows) for rows in grouped]


def normalise_speakers(
    z: np.ndarray,
    p_ref: np.ndarray,
    speakers: np.ndarray,
    prior: float,
    mu_ref: np.ndarray,
    seed: int,
) -> np.ndarray:
    """Every speaker's rows normalised as one causal stream (:func:`speaker_streams`)."""
    out = np.empty_like(z, dtype=np.float32)
    for rows in speaker_streams(speakers, seed):
        out[rows] = normalise_sequence(z[rows], p_ref[rows], prior, mu_ref)
    return out


class RefNormLinearHead(nn.Module):
    """Pooled statistics (``stats``: every layer's mean and std, or its mean only) → standardise
    → stage 1 (p_ref) → per-speaker reference normalisation → stage 2 linear classifier.
    ``forward`` without a normaliser is the no-history case (no shift)."""

    def __init__(
        self,
        n_layers: int,
        dim: int,
        n_classes: int,
        prior: float,
        ref_classes: Sequence[int],
        kind: str = "stats_linear_refnorm",
        stats: str = "mean_std",
    ) -> None:
        super().__init__()
        feat = stats_width(n_layers, dim, stats)
        self.register_buffer("mu", torch.zeros(feat))
        self.register_buffer("sigma", torch.ones(feat))
        self.register_buffer("mu_ref", torch.zeros(feat))
        self.stage1 = nn.Linear(feat, n_classes)
        self.out = nn.Linear(feat, n_classes)
        self.prior = float(prior)
        self.ref_classes = [int(i) for i in ref_classes]
        self.hparams = {
            "kind": kind,
            "n_layers": n_layers,
            "dim": dim,
            "n_classes": n_classes,
            "prior": self.prior,
            "ref_classes": self.ref_classes,
            "stats": stats,
        }

    @property
    def feature_dim(self) -> int:
        return int(self.mu.numel())

    def standardise(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, L * 2D) pooled statistics → the standardised statistics the head reads."""
        hp = self.hparams
        return (select_stats(pooled, hp["n_layers"], hp["dim"], hp["stats"]) - self.mu) / self.sigma

    def p_ref(self, z: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.stage1(z), dim=-1)[:, self.ref_classes].sum(-1)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.standardise(masked_stats(states, mask)))

    def logits_from_pooled(
        self, pooled: np.ndarray, normalisers: Sequence[ReferenceNormalizer | None]
    ) -> np.ndarray:
        """(B, F) pooled statistics in time order and one normaliser (or None: no history) per
        row → (B, C) logits; the normalisers are updated in row order."""
        with torch.inference_mode():
            z = self.standardise(torch.from_numpy(np.asarray(pooled, dtype=np.float32)))
            p = self.p_ref(z).numpy()
            zn = z.numpy().copy()
            mu_ref = self.mu_ref.numpy()
            for i, norm in enumerate(normalisers):
                if norm is not None:
                    zn[i] = norm.apply(zn[i], float(p[i]), self.prior, mu_ref)
            return self.out(torch.from_numpy(zn)).numpy().astype(np.float64)


# ------------------------------------------------------------------------------ fitting


def fit_lr(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    c: float,
    sample_weight: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """L2 logistic regression on standardised ``x``, class-balanced unless ``sample_weight`` is
    given (which then carries the balance); the standardisation is folded into the returned
    (W, b) so that logits = x @ W.T + b on raw ``x``."""
    from sklearn.linear_model import LogisticRegression

    mu = x.mean(0)
    sd = x.std(0) + 1e-5
    clf = LogisticRegression(
        C=c, max_iter=500, class_weight="balanced" if sample_weight is None else None
    )
    clf.fit((x - mu) / sd, y, sample_weight=sample_weight)
    if len(clf.classes_) != n_classes:
        raise ValueError(f"training data covers {len(clf.classes_)} of {n_classes} classes")
    coef, intercept = clf.coef_, clf.intercept_
    if n_classes == 2:  # one logit for class 1; softmax([0, l]) is the same model
        coef = np.concatenate([np.zeros_like(coef), coef])
        intercept = np.concatenate([np.zeros_like(intercept), intercept])
    w = coef / sd
    b = intercept - (w * mu).sum(1)
    return w, b


def fit_refnorm_head(
    pooled: dict[str, np.ndarray],
    rows: np.ndarray,
    y: np.ndarray,
    speakers: np.ndarray,
    n_layers: int,
    n_classes: int,
    ref_classes: Sequence[int],
    c: float,
    prior: float,
    variants: Sequence[str],
    orders: int = 2,
    seed: int = 0,
    weights: np.ndarray | None = None,
    stats: str = "mean_std",
) -> RefNormLinearHead:
    """Fit both stages on ``rows`` (training speakers): stage 1 on standardised statistics of all
    training variants; stage 2 on the same rows normalised causally in ``orders`` random
    per-speaker orders per variant (so training sees early and late windows of a "call").
    ``weights`` (one per row of ``rows``) replace the class balance, e.g. corpus × class;
    ``stats`` picks the statistics the head reads (:func:`select_stats`)."""
    dim = pooled["clean"].shape[1] // (2 * n_layers)
    x = {
        v: select_stats(pooled[v][rows], n_layers, dim, stats)
        for v in dict.fromkeys(["clean", *variants])
    }
    mu = x["clean"].mean(0)
    sigma = x["clean"].std(0) + 1e-5
    z = {v: ((x[v] - mu) / sigma).astype(np.float32) for v in variants}
    yr = y[rows]
    w1, b1 = fit_lr(
        np.concatenate([z[v] for v in variants]),
        np.concatenate([yr] * len(variants)),
        n_classes,
        c,
        None if weights is None else np.tile(weights, len(variants)),
    )
    mu_ref = z["clean"][np.isin(yr, list(ref_classes))].mean(0).astype(np.float32)
    head = RefNormLinearHead(n_layers, dim, n_classes, prior, ref_classes, stats=stats)
    with torch.no_grad():
        head.mu.copy_(torch.from_numpy(mu.astype(np.float32)))
        head.sigma.copy_(torch.from_numpy(sigma.astype(np.float32)))
        head.mu_ref.copy_(torch.from_numpy(mu_ref))
        head.stage1.weight.copy_(torch.from_numpy(w1.astype(np.float32)))
        head.stage1.bias.copy_(torch.from_numpy(b1.astype(np.float32)))
    xs, ys = [], []
    for k, v in enumerate(variants):
        with torch.inference_mode():
            p = head.p_ref(torch.from_numpy(z[v])).numpy()
        for o in range(orders):
            xs.append(
                normalise_speakers(z[v], p, speakers[rows], prior, mu_ref, seed + 1000 * o + k)
            )
            ys.append(yr)
    sw = None if weights is None else np.tile(weights, len(xs))
    w2, b2 = fit_lr(np.concatenate(xs), np.concatenate(ys), n_classes, c, sw)
    with torch.no_grad():
        head.out.weight.copy_(torch.from_numpy(w2.astype(np.float32)))
        head.out.bias.copy_(torch.from_numpy(b2.astype(np.float32)))
    return head.eval()


def refnorm_logits(
    head: RefNormLinearHead,
    pooled: np.ndarray,
    speakers: np.ndarray,
    seed: int,
    history: bool = True,
) -> np.ndarray:
    """Logits for rows of several speakers, each speaker's rows normalised in a random (seeded)
    order; ``history=False`` classifies every row as a speaker's first window."""
    out = np.zeros((len(pooled), head.out.out_features))
    for rows in speaker_streams(speakers, seed):
        norm = ReferenceNormalizer(head.feature_dim) if history else None
        out[rows] = head.logits_from_pooled(pooled[rows], [norm] * len(rows))
    return out


def build_head(hparams: dict) -> nn.Module:
    """The head a model's config describes (every kind: attentive, linear, refnorm)."""
    hp = dict(hparams)
    if hp.get("kind") == "stats_linear_refnorm":
        return RefNormLinearHead(**hp)
    if hp.get("kind", "attentive") == "stats_linear":
        return StatsLinearHead(**hp)
    hp.pop("kind", None)
    return EmotionHead(**hp)
