"""Audio loading/validation and the model's behaviour on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from callsense.models.audio import (
    AudioError,
    active_level_dbfs,
    load_audio,
    normalize_level,
    prepare,
    resample,
    to_mono,
)
from callsense.models.augment import telephone


def _tone(sr: int, seconds: float, amp: float = 0.3) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_load_audio_wav_flac_ogg_and_stereo(tmp_path: Path) -> None:
    x = _tone(8000, 1.0)
    for ext in ("wav", "flac", "ogg"):
        sf.write(tmp_path / f"a.{ext}", np.stack([x, -x], axis=1), 8000)
        audio, sr = load_audio(tmp_path / f"a.{ext}")
        assert sr == 8000 and audio.shape[0] == 2 and abs(audio.shape[1] - 8000) < 100
    mono16 = prepare(audio, sr)
    assert abs(len(mono16) - 16000) < 200 and mono16.dtype == np.float32


def test_load_audio_rejects_non_audio_and_empty(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_text("this is not audio")
    with pytest.raises(AudioError, match="not a readable audio file"):
        load_audio(tmp_path / "x.wav")
    sf.write(tmp_path / "e.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError):
        load_audio(tmp_path / "e.wav")
    with pytest.raises(AudioError, match="no such file"):
        load_audio(tmp_path / "missing.wav")


def test_prepare_validates() -> None:
    with pytest.raises(AudioError, match="empty"):
        prepare(np.zeros(0, np.float32), 16000)
    bad = _tone(16000, 1.0)
    bad[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        prepare(bad, 16000)
    with pytest.raises(AudioError, match="at least 0.5 s"):
        prepare(_tone(16000, 0.3), 16000)
    with pytest.raises(AudioError, match="sample_rate"):
        prepare(_tone(16000, 1.0), 0)


def test_to_mono_int16_and_layouts() -> None:
    pcm = (np.ones((2, 100)) * 16384).astype(np.int16)
    np.testing.assert_allclose(to_mono(pcm), 0.5)
    np.testing.assert_allclose(to_mono(np.ones((100, 2), np.float32)), 1.0)  # (T, ch)


def test_resample_length() -> None:
    assert len(resample(_tone(8000, 2.0), 8000, 16000)) == 32000


def test_level_normalisation_is_gain_invariant() -> None:
    x = _tone(16000, 1.0, 0.01)
    a, b = normalize_level(x), normalize_level(x * 30)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert active_level_dbfs(a) == pytest.approx(-26.0, abs=0.1)
    assert np.all(normalize_level(np.zeros(16000, np.float32)) == 0)  # silence: no gain


def test_telephone_channel_is_band_limited() -> None:
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal(16000)).astype(np.float32)
    y = telephone(x)
    spec = np.abs(np.fft.rfft(y))
    freqs = np.fft.rfftfreq(len(y), 1 / 16000)
    assert spec[freqs > 4200].mean() < 0.02 * spec[(freqs > 500) & (freqs < 3000)].mean()
