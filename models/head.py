"""Classifier head on encoder hidden states: learned layer mix → attentive statistics pooling →
linear classifier. Works on (L, B, T, D) hidden states and a (B, T) validity mask."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class AttentiveStatsPool(nn.Module):
    """Attention-weighted mean and standard deviation over valid frames (Okabe et al., 2018)."""

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.att = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.att(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=1).unsqueeze(-1)
        mean = (w * x).sum(dim=1)
        var = (w * (x - mean.unsqueeze(1)) ** 2).sum(dim=1)
        return torch.cat([mean, torch.sqrt(var.clamp_min(1e-6))], dim=-1)


class EmotionHead(nn.Module):
    def __init__(
        self,
        n_layers: int,
        dim: int,
        n_classes: int,
        proj: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, proj)
        self.pool = AttentiveStatsPool(proj)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * proj, n_classes)
        self.hparams = {
            "n_layers": n_layers,
            "dim": dim,
            "n_classes": n_classes,
            "proj": proj,
            "dropout": dropout,
        }

    def embed(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """states (L, B, T, D), mask (B, T) bool → pooled (B, 2*proj)."""
        w = torch.softmax(self.layer_logits, dim=0).view(-1, 1, 1, 1)
        x = (w * states).sum(dim=0)
        x = F.gelu(self.proj(self.norm(x)))
        return self.pool(x, mask)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.drop(self.embed(states, mask)))

    def layer_weights(self) -> list[float]:
        return torch.softmax(self.layer_logits.detach(), dim=0).tolist()


def masked_stats(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(L, B, T, D) states, (B, T) mask → (B, L * 2D): per layer [mean ‖ std] over valid frames
    (population std), layer-major."""
    m = mask.to(states.dtype).unsqueeze(0).unsqueeze(-1)  # 1, B, T, 1
    n = m.sum(2).clamp_min(1.0)
    mean = (states * m).sum(2) / n
    var = (((states - mean.unsqueeze(2)) ** 2) * m).sum(2) / n
    stats = torch.cat([mean, var.sqrt()], dim=-1)  # L, B, 2D
    return stats.permute(1, 0, 2).reshape(stats.shape[1], -1)


STATS = ("mean_std", "mean")


def stats_width(n_layers: int, dim: int, stats: str) -> int:
    """How many values a head reads for ``stats`` (see :func:`select_stats`)."""
    if stats not in STATS:
        raise ValueError(f"unknown statistics {stats!r} ({', '.join(STATS)})")
    return n_layers * (2 if stats == "mean_std" else 1) * dim


def select_stats(pooled: Any, n_layers: int, dim: int, stats: str) -> Any:
    """(B, L * 2D) :func:`masked_stats` output (array or tensor) → the statistics a head reads:
    all of them (``mean_std``) or each layer's mean only (``mean``, (B, L * D))."""
    stats_width(n_layers, dim, stats)
    if stats == "mean_std":
        return pooled
    return pooled.reshape(len(pooled), n_layers, 2, dim)[:, :, 0].reshape(len(pooled), -1)


class StatsLinearHead(nn.Module):
    """Mean/std pooling of every mixed layer → standardisation → linear classifier.

    Weights come from a class-balanced, L2-regularised logistic regression
    (:func:`callsense.models.train.fit_linear`); the standardisation is part of the module.
    """

    def __init__(self, n_layers: int, dim: int, n_classes: int, kind: str = "stats_linear") -> None:
        super().__init__()
        feat = n_layers * 2 * dim
        self.register_buffer("mu", torch.zeros(feat))
        self.register_buffer("sigma", torch.ones(feat))
        self.out = nn.Linear(feat, n_classes)
        self.hparams = {"kind": kind, "n_layers": n_layers, "dim": dim, "n_classes": n_classes}

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out((masked_stats(states, mask) - self.mu) / self.sigma)
