"""Audio input for the emotion model: loading, validation, resampling, level normalisation.

Everything here works on numpy arrays so every stage can reuse it. Inside the model the audio is
always 16 kHz mono float32 in [-1, 1]; anything else (another sample rate, stereo, int PCM) is
converted here, and input that cannot be speech (empty, NaN/inf, not audio) raises
:class:`AudioError` with a message that says what was wrong.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MODEL_SR = 16000
MIN_SECONDS = 0.5
# Active-speech level every window is normalised to before the encoder (dBFS of the 95th
# percentile of 25 ms frame RMS). RAVDESS levels depend on the acted emotion (angry ~ -22,
# neutral ~ -40): without this the model learns loudness instead of emotion.
TARGET_LEVEL_DBFS = -26.0
_FRAME = 400  # 25 ms at 16 kHz
_SILENCE_DBFS = -70.0


class AudioError(ValueError):
    """Input that is not usable audio (empty, non-finite, too short, unreadable)."""


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an audio file as ``(channels, T)`` float32 in [-1, 1] and its sample rate.

    WAV/FLAC/OGG go through soundfile; MP3 and anything soundfile cannot open fall back to
    torchaudio (torchcodec/ffmpeg). Raises :class:`AudioError` for unreadable or empty files.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        import soundfile as sf

        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        audio = np.ascontiguousarray(data.T)
    except Exception as sf_exc:  # noqa: BLE001 - try the second decoder, then report
        try:
            audio, sr = _load_with_torchaudio(path)
        except Exception as ta_exc:  # noqa: BLE001
            # the user gets the reason in one line; decoder diagnostics go to the debug log
            log.debug("%s: soundfile: %s; torchaudio: %s", path, sf_exc, ta_exc)
            raise AudioError(
                f"{path}: not a readable audio file ({_reason(sf_exc)}; readable: WAV, FLAC, "
                f"OGG{', MP3' if _ffmpeg_decoder() else ' (MP3 needs FFmpeg, not found)'})"
            ) from None
    if audio.size == 0 or audio.shape[-1] == 0:
        raise AudioError(f"{path}: file contains no samples")
    return audio.astype(np.float32, copy=False), int(sr)


def _reason(exc: BaseException) -> str:
    """soundfile's reason without the path it repeats ("Error opening '/x': Format ...")."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if text.startswith("Error opening") and ": " in text:
        text = text.rsplit(": ", 1)[1]
    return text.rstrip(".") or "unknown format"


@lru_cache(maxsize=1)
def _ffmpeg_decoder() -> bool:
    """Whether the fallback decoder (torchcodec on FFmpeg) can load at all."""
    try:
        import torchcodec.decoders  # noqa: F401
    except Exception:  # noqa: BLE001 - any load failure means no fallback
        return False
    return True


def _load_with_torchaudio(path: Path) -> tuple[np.ndarray, int]:
    import torchaudio

    wav, sr = torchaudio.load(str(path))
    return wav.numpy().astype(np.float32), int(sr)


def to_mono(x: np.ndarray) -> np.ndarray:
    """(T,) or (channels, T) → (T,) float32 by averaging channels.

    A 2-D array is read as (channels, T) when its first axis is the shorter one (≤ 8), else as
    (T, channels) as soundfile returns it.
    """
    x = np.asarray(x)
    if x.ndim == 1:
        return _as_float(x)
    if x.ndim != 2:
        raise AudioError(f"audio must be 1-D or 2-D (channels, T), got shape {x.shape}")
    if x.shape[0] > 8 and x.shape[1] <= 8:
        x = x.T
    return _as_float(x).mean(axis=0)


def _as_float(x: np.ndarray) -> np.ndarray:
    if x.dtype.kind == "i":
        scale = float(np.iinfo(x.dtype).max) + 1.0
        return (x.astype(np.float32) / scale).astype(np.float32)
    if x.dtype.kind == "u":
        info = np.iinfo(x.dtype)
        mid = (int(info.max) + 1) / 2.0
        return ((x.astype(np.float32) - mid) / mid).astype(np.float32)
    if x.dtype.kind != "f":
        raise AudioError(f"audio samples must be numeric, got dtype {x.dtype}")
    return x.astype(np.float32, copy=False)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Resample along the last axis with soxr (high quality). Returns float32."""
    if sr_in <= 0 or sr_out <= 0:
        raise AudioError(f"invalid sample rate {sr_in} -> {sr_out}")
    x = np.asarray(x, dtype=np.float32)
    if sr_in == sr_out:
        return x
    import soxr

    if x.ndim == 1:
        return soxr.resample(x, sr_in, sr_out).astype(np.float32)
    # soxr takes (T, channels)
    return np.ascontiguousarray(soxr.resample(x.T, sr_in, sr_out).T.astype(np.float32))


def validate(x: np.ndarray, sample_rate: int, min_seconds: float = MIN_SECONDS) -> None:
    """Raise :class:`AudioError` for empty, non-finite or too-short audio."""
    if x.size == 0:
        raise AudioError("audio is empty")
    if not np.all(np.isfinite(x)):
        raise AudioError("audio contains NaN or infinite samples")
    seconds = x.shape[-1] / float(sample_rate)
    if seconds < min_seconds:
        raise AudioError(f"audio is {seconds:.3f} s long; at least {min_seconds} s is required")


def prepare(x: np.ndarray, sample_rate: int, min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Any-rate mono/stereo array → validated 16 kHz mono float32 (not yet level-normalised)."""
    if not isinstance(sample_rate, int | np.integer) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    x = np.asarray(x)
    if x.dtype.kind not in "iuf":
        raise AudioError(f"audio samples must be numeric, got dtype {x.dtype}")
    mono = to_mono(x)
    validate(mono, int(sample_rate), min_seconds)
    return resample(mono, int(sample_rate), MODEL_SR)


def frame_rms_db(x: np.ndarray, frame: int = _FRAME) -> np.ndarray:
    """RMS level in dBFS of non-overlapping frames (at least one frame)."""
    n = max(1, len(x) // frame)
    frames = x[: n * frame].reshape(n, -1) if len(x) >= frame else x.reshape(1, -1)
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-20)
    return 20.0 * np.log10(rms)


def active_level_dbfs(x: np.ndarray) -> float:
    """Active-speech level: 95th percentile of frame RMS (dBFS)."""
    return float(np.percentile(frame_rms_db(x), 95))


def normalize_level(x: np.ndarray, target_dbfs: float = TARGET_LEVEL_DBFS) -> np.ndarray:
    """Scale a window so its active-speech level is ``target_dbfs`` (peak-limited to 0.99).

    Runs per window, online: no statistics from outside the window are needed. Digital silence
    is returned unchanged (no gain applied).
    """
    level = active_level_dbfs(x)
    if level < _SILENCE_DBFS:
        return x.astype(np.float32, copy=True)
    gain = 10.0 ** ((target_dbfs - level) / 20.0)
    y = x * gain
    peak = float(np.max(np.abs(y)))
    if peak > 0.99:
        y = y * (0.99 / peak)
    return y.astype(np.float32)


def trim_silence(x: np.ndarray, rel_db: float = 35.0, pad_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing frames more than ``rel_db`` below the loudest frame (+ padding)."""
    db = frame_rms_db(x)
    keep = np.flatnonzero(db > db.max() - rel_db)
    if keep.size == 0:
        return x
    pad = int(pad_s * MODEL_SR)
    start = max(0, keep[0] * _FRAME - pad)
    stop = min(len(x), (keep[-1] + 1) * _FRAME + pad)
    return x[start:stop]


def fit_window(x: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Centre-crop or right-pad with zeros to ``n`` samples; returns (window, valid_samples)."""
    if len(x) >= n:
        start = (len(x) - n) // 2
        return x[start : start + n], n
    out = np.zeros(n, dtype=np.float32)
    out[: len(x)] = x
    return out, len(x)


def split_windows(x: np.ndarray, n: int, hop: int) -> list[np.ndarray]:
    """Windows of ``n`` samples every ``hop`` covering ``x`` (one window if x is shorter)."""
    if len(x) <= n:
        return [x]
    starts = list(range(0, len(x) - n + 1, hop))
    if starts[-1] + n < len(x):
        starts.append(len(x) - n)
    return [x[s : s + n] for s in starts]
