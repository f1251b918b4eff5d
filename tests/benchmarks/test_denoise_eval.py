"""Helpers of the noise-reduction measurement (the measurement itself is a script)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.denoise_eval import add_noise_at_speech_snr, paired, scores


@pytest.mark.parametrize("seed", [0, 1], ids=["white", "pink"])
def test_noise_is_added_at_the_requested_speech_snr(seed: int) -> None:
    t = np.arange(32000) / 16000
    x = np.concatenate([np.zeros(8000), 0.2 * np.sin(2 * np.pi * 220 * t), np.zeros(8000)])
    speech = slice(8000, 40000)
    y = add_noise_at_speech_snr(x.astype(np.float32), speech, 10.0, seed)
    noise = (y - x).astype(np.float64)
    snr = 10 * np.log10(np.mean(x[speech] ** 2) / np.mean(noise**2))
    assert snr == pytest.approx(10.0, abs=0.05)
    assert np.array_equal(y, add_noise_at_speech_snr(x.astype(np.float32), speech, 10.0, seed))
    assert np.abs(y[:8000]).max() > 0  # noise also fills the pauses


def test_scores_hand_computed() -> None:
    y = np.array([0, 0, 1, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, -1, 0])  # -1: a clip without windows counts as wrong
    s = scores(y, pred, 3)
    assert s["recall"] == pytest.approx([0.5, 2 / 3, 0.0])
    assert s["ua"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert s["wa"] == pytest.approx(3 / 6)
    # F1: class 0 p=1/2 r=1/2 -> 0.5; class 1 p=2/3 r=2/3 -> 2/3; class 2 -> 0
    assert s["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 3)


def test_paired_sign_test_hand_computed() -> None:
    off = [1, 1, 1, 0, 0, 1]
    on = [1, 0, 0, 0, 1, 1]
    r = paired(off, on)
    assert (r["right_only_off"], r["right_only_on"]) == (2, 1)
    # n = 3 discordant clips, two-sided exact: 2 * P(X <= 1 | n=3, p=.5) = 2 * 4/8 -> 1.0
    assert r["mcnemar_p"] == pytest.approx(1.0)
    assert paired([1] * 10, [0] * 10)["mcnemar_p"] == pytest.approx(2 / 1024)
