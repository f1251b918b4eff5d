"""Classifier head on encoder hidden states: learned layer mix → attentive statistics pooling →
linear classifier. Works on (L, B, T, D) hidden states and a (B, T) validity mask."""

from __future__ import annotations

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
