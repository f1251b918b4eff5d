"""The emotion model's inference API: ``EmotionModel.load(...).predict(windows, sample_rate)``.

Artefact layout (a directory)::

    model.json   encoder spec, label set, window length, level target, temperature, head
                 hyper-parameters, training provenance
    heads.pt     state dicts of one or more heads (an ensemble's logits are averaged)

The encoder weights are not copied: they load from the registry package that ships them.
Nothing here touches the network.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from callsense.models.audio import (
    MODEL_SR,
    AudioError,
    fit_window,
    normalize_level,
    prepare,
    split_windows,
)
from callsense.models.confidence import softmax
from callsense.models.encoder import Backbone, build_backbone
from callsense.models.speaker_norm import build_head

FORMAT_VERSION = 1


def preprocess(audio_16k: np.ndarray, window: int, level_dbfs: float) -> tuple[np.ndarray, int]:
    """16 kHz mono → level-normalised window of exactly ``window`` samples + valid length.
    Training and inference both go through this function."""
    x, n = fit_window(audio_16k, window)
    x = x.copy()
    x[:n] = normalize_level(x[:n], level_dbfs)
    return x, n


class EmotionModel:
    """Speech-emotion classifier on fixed-length windows.

    ``predict`` is thread-safe (one lock around the forward pass) and batched; windows longer
    than the model's window are cut into windows with 50 % overlap whose probabilities are
    averaged; shorter ones (≥ 0.5 s) are zero-padded and only their real frames are pooled.
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: list[torch.nn.Module],
        config: dict[str, Any],
        int8: bool = False,
    ) -> None:
        self.backbone = backbone.eval()
        self.heads = [h.eval() for h in heads]
        self.config = config
        self.labels: list[str] = list(config["labels"])
        self.sample_rate: int = MODEL_SR
        self.window_s: float = float(config["window_s"])
        self.temperature: float = float(config.get("temperature", 1.0))
        self.level_dbfs: float = float(config["level_dbfs"])
        self.int8 = int8
        self._lock = threading.Lock()
        if int8:
            self.backbone = torch.ao.quantization.quantize_dynamic(
                self.backbone, {torch.nn.Linear}, dtype=torch.qint8
            )

    @property
    def uses_speaker_state(self) -> bool:
        """True when the model normalises each speaker against their own history
        (:mod:`callsense.models.speaker_norm`); callers then keep one state per speaker."""
        return getattr(self.heads[0], "hparams", {}).get("kind") == "stats_linear_refnorm"

    def new_speaker_state(self) -> Any:
        """A fresh per-speaker state (None when the model keeps none)."""
        if not self.uses_speaker_state:
            return None
        from callsense.models.speaker_norm import ReferenceNormalizer

        return ReferenceNormalizer(self.heads[0].feature_dim)

    def speaker_state_from(self, d: dict[str, Any] | None) -> Any:
        if d is None or not self.uses_speaker_state:
            return None
        from callsense.models.speaker_norm import ReferenceNormalizer

        return ReferenceNormalizer.from_state(d)

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * MODEL_SR))

    @classmethod
    def load(
        cls, model_dir: str | Path | None = None, int8: bool = False, threads: int = 1
    ) -> EmotionModel:
        if model_dir is None:
            from callsense.settings import get_settings

            model_dir = get_settings().model_dir
        model_dir = Path(model_dir)
        cfg_path = model_dir / "model.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"no model.json in {model_dir}")
        config = json.loads(cfg_path.read_text())
        if config.get("format") != FORMAT_VERSION:
            raise ValueError(f"{cfg_path}: unsupported model format {config.get('format')}")
        if threads:
            torch.set_num_threads(int(threads))
        backbone = build_backbone(config["encoder"])
        states = torch.load(model_dir / "heads.pt", map_location="cpu", weights_only=True)
        heads = []
        for sd in states:
            head = build_head(config["head"])
            head.load_state_dict(sd)
            heads.append(head)
        return cls(backbone, heads, config, int8=int8)

    def save(self, model_dir: str | Path) -> None:
        save_artifact(model_dir, self.config, self.heads)

    # ------------------------------------------------------------------ inference

    def _to_windows(
        self, windows: np.ndarray | list[np.ndarray], sample_rate: int
    ) -> tuple[list[np.ndarray], list[int], list[int]]:
        if isinstance(windows, np.ndarray):
            if windows.ndim == 1:
                raise AudioError("windows must be (B, T) or a list of 1-D arrays; got 1-D")
            if windows.ndim != 2:
                raise AudioError(f"windows must be (B, T); got shape {windows.shape}")
            items = list(windows)
        elif isinstance(windows, list | tuple):
            items = list(windows)
        else:
            raise AudioError(f"windows must be an array or a list of arrays, not {type(windows)}")
        if not items:
            raise AudioError("no windows given")
        n = self.window_samples
        xs, lens, owner = [], [], []
        for i, w in enumerate(items):
            try:
                audio = prepare(np.asarray(w), sample_rate)
            except AudioError as exc:
                raise AudioError(f"window {i}: {exc}") from None
            for part in split_windows(audio, n, n // 2):
                x, valid = preprocess(part, n, self.level_dbfs)
                xs.append(x)
                lens.append(valid)
                owner.append(i)
        return xs, lens, owner

    def _encode(
        self,
        xs: list[np.ndarray],
        lens: list[int],
        batch_size: int,
        read: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> np.ndarray:
        """``read(states, mask)`` over the encoder's output, ``batch_size`` windows per forward,
        rows concatenated."""
        if self.int8:
            # Dynamic quantisation takes its activation scales from the whole input tensor, so
            # a window's int8 result would depend on the windows batched with it (the stream
            # batches across calls, offline analysis per file). One window per forward keeps
            # every result independent of its batch; batching does not speed up int8 here
            # anyway (`callsense bench model`: 48 ms at batch 1 vs 54 ms per window at 16).
            batch_size = 1
        out = []
        for s in range(0, len(xs), batch_size):
            audio = np.ascontiguousarray(np.stack(xs[s : s + batch_size]), dtype=np.float32)
            with self._lock, torch.inference_mode():
                states, mask = self.backbone(
                    torch.from_numpy(audio),
                    torch.as_tensor(lens[s : s + batch_size], dtype=torch.long),
                )
                out.append(read(states, mask).numpy())
        return np.concatenate(out)

    def _ensemble_logits(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(states, mask) for h in self.heads]).mean(0)

    def _mean_per_window(self, probs: np.ndarray, owner: list[int] | np.ndarray) -> np.ndarray:
        """Average the rows of the parts of each window (``owner``: window index per row)."""
        owner_arr = np.asarray(owner)
        n_items = int(owner_arr.max()) + 1
        out = np.zeros((n_items, probs.shape[1]))
        np.add.at(out, owner_arr, probs)
        out /= np.bincount(owner_arr, minlength=n_items)[:, None]
        return out

    def embed(
        self, windows: np.ndarray | list[np.ndarray], sample_rate: int, batch_size: int = 16
    ) -> list[np.ndarray]:
        """Per window, the pooled statistics (parts, F) the model's statistics head reads (a
        window longer than the model window has several parts). Only for statistics heads."""
        from callsense.models.head import masked_stats

        xs, lens, owner = self._to_windows(windows, sample_rate)
        flat = self._encode(xs, lens, batch_size, masked_stats)
        owner_arr = np.asarray(owner)
        return [flat[owner_arr == i] for i in range(int(owner_arr.max()) + 1)]

    def predict_embedded(self, parts: list[np.ndarray], speakers: list[Any] | None) -> np.ndarray:
        """Calibrated probabilities (B, C) from :meth:`embed`'s output, updating each window's
        speaker state (None = classify as a speaker's first window) in window order."""
        if speakers is None:
            speakers = [None] * len(parts)
        if len(speakers) != len(parts):
            raise ValueError(f"{len(speakers)} speaker states for {len(parts)} windows")
        per_row = [spk for p, spk in zip(parts, speakers, strict=True) for _ in range(len(p))]
        owner = [i for i, p in enumerate(parts) for _ in range(len(p))]
        with self._lock:
            logits = self.heads[0].logits_from_pooled(np.concatenate(parts), per_row)
        return self._mean_per_window(softmax(logits, self.temperature), owner)

    def predict(
        self,
        windows: np.ndarray | list[np.ndarray],
        sample_rate: int,
        batch_size: int = 16,
        speakers: list[Any] | None = None,
    ) -> np.ndarray:
        """Calibrated class probabilities (B, C) for B windows; rows sum to 1.

        ``speakers``: for a model that :attr:`uses_speaker_state`, one state per window (from
        :meth:`new_speaker_state`; the same object for windows of one speaker, in time order);
        without it every window is classified as a speaker's first. Other models ignore it.
        """
        if self.uses_speaker_state:
            return self.predict_embedded(self.embed(windows, sample_rate, batch_size), speakers)
        xs, lens, owner = self._to_windows(windows, sample_rate)
        logits = self._encode(xs, lens, batch_size, self._ensemble_logits).astype(np.float64)
        return self._mean_per_window(softmax(logits, self.temperature), owner)

    def predict_file(self, path: str | Path) -> np.ndarray:
        """Probabilities (C,) for a whole file (mixed to mono; long files are windowed)."""
        from callsense.models.audio import load_audio

        audio, sr = load_audio(path)
        return self.predict([audio], sr)[0]


def save_artifact(
    model_dir: str | Path, config: dict[str, Any], heads: list[torch.nn.Module]
) -> None:
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config = dict(config, format=FORMAT_VERSION)
    torch.save([h.state_dict() for h in heads], model_dir / "heads.pt")
    (model_dir / "model.json").write_text(json.dumps(config, indent=2) + "\n")
