"""Waveform augmentation for training (all on 16 kHz mono float32 numpy arrays).

Every function takes a ``numpy.random.Generator`` so runs are reproducible.
"""

from __future__ import annotations

import numpy as np
from callsense.models.audio import MODEL_SR, resample


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Additive noise at ``snr_db`` (white or pink-ish, chosen at random)."""
    noise = rng.standard_normal(len(x)).astype(np.float32)
    if rng.random() < 0.5:  # pink-ish: integrate white noise once, remove drift
        noise = np.cumsum(noise)
        noise = noise - np.convolve(noise, np.ones(256) / 256, mode="same")
    p_sig = float(np.mean(x.astype(np.float64) ** 2)) + 1e-12
    p_noise = float(np.mean(noise.astype(np.float64) ** 2)) + 1e-12
    scale = np.sqrt(p_sig / (p_noise * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


def gain(x: np.ndarray, db: float) -> np.ndarray:
    return np.clip(x * 10 ** (db / 20), -1.0, 1.0).astype(np.float32)


def speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Speed perturbation (tempo and pitch together) by resampling."""
    return resample(x, int(round(MODEL_SR * factor)), MODEL_SR)


def time_shift(x: np.ndarray, max_s: float, rng: np.random.Generator) -> np.ndarray:
    shift = int(rng.integers(-int(max_s * MODEL_SR), int(max_s * MODEL_SR) + 1))
    return np.roll(x, shift).astype(np.float32)


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """8-bit mu-law encode + decode (G.711 style companding and quantisation)."""
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return (np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu).astype(np.float32)


def telephone(x: np.ndarray, level_dbfs: float = -20.0) -> np.ndarray:
    """Narrowband telephone channel: 300-3400 Hz band, 8 kHz sampling, 8-bit mu-law, back to
    16 kHz. The signal is set to a typical line level first so quantisation noise is realistic."""
    from scipy.signal import butter, sosfiltfilt

    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-9
    y = x * (10 ** (level_dbfs / 20) / rms)
    y8 = resample(y, MODEL_SR, 8000)
    sos = butter(4, [300, 3400], btype="bandpass", fs=8000, output="sos")
    y8 = sosfiltfilt(sos, y8).astype(np.float32)
    y8 = mu_law(np.clip(y8, -1.0, 1.0))
    return resample(y8, 8000, MODEL_SR)


def random_augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random chain: speed (0.9-1.1) → gain (±10 dB) → noise (5-30 dB SNR, p=0.5) →
    telephone channel (p=0.35)."""
    if rng.random() < 0.6:
        x = speed(x, float(rng.uniform(0.9, 1.1)))
    x = gain(x, float(rng.uniform(-10, 10)))
    if rng.random() < 0.5:
        x = add_noise(x, float(rng.uniform(5, 30)), rng)
    if rng.random() < 0.35:
        x = telephone(x)
    return x
