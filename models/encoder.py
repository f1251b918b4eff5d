"""Speech encoders that turn 16 kHz windows into stacked hidden states for the head.

* ``whisper-base``: Whisper base from the registry packages (CTranslate2 ``model.bin`` read by
  :mod:`callsense.models.ct2`), truncated after the deepest layer the head uses.
* ``hf:<name or local path>``: any Hugging Face audio encoder (wav2vec2, HuBERT, WavLM ...)
  loaded with ``local_files_only=True`` (never downloads).

``Backbone.forward(audio, lengths)`` → (states (L, B, T, D) for the configured layers,
mask (B, T) bool of frames covering real audio). States are averaged over ``time_pool``
adjacent frames to keep the head cheap.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from callsense.models.ct2 import LogMel, load_whisper_base
from torch import nn


class Backbone(nn.Module):
    layers: list[int]
    dim: int
    time_pool: int

    def spec(self) -> dict[str, Any]:
        raise NotImplementedError

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.time_pool
        if p <= 1:
            return states, mask
        L, B, T, D = states.shape
        t = math.ceil(T / p)
        if t * p != T:
            states = F.pad(states, (0, 0, 0, t * p - T))
            mask = F.pad(mask, (0, t * p - T))
        m = mask.view(B, t, p).float()
        s = (states.view(L, B, t, p, D) * m.view(1, B, t, p, 1)).sum(3)
        s = s / m.sum(-1).clamp_min(1).view(1, B, t, 1)
        return s, m.sum(-1) > 0


class WhisperBackbone(Backbone):
    def __init__(self, layers: list[int], time_pool: int = 2) -> None:
        super().__init__()
        self.layers = sorted(layers)
        self.time_pool = time_pool
        self.encoder = load_whisper_base(n_layers=max(self.layers))
        self.mel = LogMel(self.encoder.n_mels)
        self.dim = self.encoder.d

    def spec(self) -> dict[str, Any]:
        return {"type": "whisper-base", "layers": self.layers, "time_pool": self.time_pool}

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mel = self.mel(audio)
        states = self.encoder(mel)[self.layers]
        t = states.shape[2]
        frames = torch.div(
            torch.div(lengths, 160, rounding_mode="floor") + 1, 2, rounding_mode="floor"
        )
        mask = torch.arange(t).unsqueeze(0) < frames.clamp(min=1).unsqueeze(1)
        return self._pool(states, mask)


class HFBackbone(Backbone):
    """A transformers audio encoder by hub name or local path; offline only."""

    def __init__(
        self, name_or_path: str, layers: list[int], time_pool: int = 1, model: Any = None
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        self.name = name_or_path
        self.model = model or AutoModel.from_pretrained(name_or_path, local_files_only=True)
        self.model.eval()
        self.layers = sorted(layers)
        self.time_pool = time_pool
        self.dim = int(self.model.config.hidden_size)

    def spec(self) -> dict[str, Any]:
        return {
            "type": "hf",
            "name": self.name,
            "layers": self.layers,
            "time_pool": self.time_pool,
        }

    def forward(
        self, audio: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = audio.shape[1]
        sample_mask = torch.arange(n).unsqueeze(0) < lengths.unsqueeze(1)
        # per-utterance zero-mean / unit-variance over real samples (wav2vec2 convention)
        cnt = lengths.clamp_min(1).unsqueeze(1).float()
        mean = (audio * sample_mask).sum(1, keepdim=True) / cnt
        var = (((audio - mean) * sample_mask) ** 2).sum(1, keepdim=True) / cnt
        x = ((audio - mean) / torch.sqrt(var + 1e-7)) * sample_mask
        out = self.model(x, attention_mask=sample_mask.long(), output_hidden_states=True)
        hidden = torch.stack([out.hidden_states[i] for i in self.layers])
        t = hidden.shape[2]
        frames = self.model._get_feat_extract_output_lengths(lengths)
        mask = torch.arange(t).unsqueeze(0) < torch.as_tensor(frames).clamp(min=1).unsqueeze(1)
        return self._pool(hidden, mask)


def build_backbone(spec: dict[str, Any]) -> Backbone:
    kind = spec.get("type", "whisper-base")
    if kind == "whisper-base":
        return WhisperBackbone(spec.get("layers", [1, 2, 3, 4]), spec.get("time_pool", 2))
    if kind == "hf":
        return HFBackbone(spec["name"], spec["layers"], spec.get("time_pool", 1))
    raise ValueError(f"unknown encoder type {kind!r}")


def parse_encoder(arg: str, layers: list[int] | None = None, time_pool: int = 2) -> dict:
    """CLI form → spec: ``whisper-base`` or ``hf:<name or path>``."""
    if arg == "whisper-base":
        return {"type": "whisper-base", "layers": layers or [1, 2, 3, 4], "time_pool": time_pool}
    if arg.startswith("hf:"):
        return {"type": "hf", "name": arg[3:], "layers": layers or [1, 2, 3], "time_pool": 1}
    raise ValueError(f"encoder must be 'whisper-base' or 'hf:<name or path>', got {arg!r}")
