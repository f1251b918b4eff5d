"""Per-speaker neutral-reference normalisation: hand-computed updates, the one-emotion caller,
exact state round trip, and the two-stage head."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from callsense.models.speaker_norm import (
    ReferenceNormalizer,
    RefNormLinearHead,
    fit_refnorm_head,
    normalise_sequence,
)


def test_hand_computed_updates() -> None:
    mu_ref = np.zeros(2, dtype=np.float32)
    norm = ReferenceNormalizer(2)
    # window 1, p_ref 1: acc [2, 0], w 1, m = [2, 0] / (1 + 1) = [1, 0] -> z - m = [1, 0]
    np.testing.assert_allclose(norm.apply(np.array([2.0, 0.0]), 1.0, 1.0, mu_ref), [1.0, 0.0])
    # window 2, p_ref 0.5: acc [4, 1], w 1.5, m = [4, 1] / 2.5 = [1.6, 0.4] -> [2.4, 1.6]
    np.testing.assert_allclose(
        norm.apply(np.array([4.0, 2.0]), 0.5, 1.0, mu_ref), [2.4, 1.6], rtol=1e-6
    )
    assert norm.windows == 2 and norm.weight == pytest.approx(1.5)


def test_reference_shrinks_towards_the_prior_mean() -> None:
    mu_ref = np.array([1.0, -1.0], dtype=np.float32)
    z = np.array([[3.0, 3.0]] * 50, dtype=np.float32)
    few = normalise_sequence(z[:1], np.ones(1), 100.0, mu_ref)[-1]
    many = normalise_sequence(z, np.ones(50), 1.0, mu_ref)[-1]
    # a strong prior barely moves the reference; a long neutral history makes it the speaker's
    assert np.abs(few - z[0]).max() < 0.05
    np.testing.assert_allclose(many, mu_ref + (z[0] - mu_ref) / 51, rtol=1e-5)


def test_caller_who_is_never_neutral_is_not_shifted() -> None:
    """p_ref = 0 for every window (the stage-1 model sees no neutral speech): the reference stays
    at the neutral mean and the features pass unchanged, so persistent anger is kept."""
    rng = np.random.default_rng(0)
    z = rng.normal(3.0, 1.0, (40, 8)).astype(np.float32)
    mu_ref = rng.normal(0.0, 1.0, 8).astype(np.float32)
    out = normalise_sequence(z, np.zeros(40), 4.0, mu_ref)
    np.testing.assert_allclose(out, z, atol=1e-6)


def test_state_round_trip_is_exact() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20, 16)).astype(np.float32)
    p = rng.uniform(size=20)
    mu_ref = rng.normal(size=16).astype(np.float32)
    a = ReferenceNormalizer(16)
    for i in range(10):
        a.apply(z[i], p[i], 4.0, mu_ref)
    b = ReferenceNormalizer.from_state(a.state())
    for i in range(10, 20):
        np.testing.assert_array_equal(
            a.apply(z[i], p[i], 4.0, mu_ref), b.apply(z[i], p[i], 4.0, mu_ref)
        )
    with pytest.raises(ValueError, match="feature size"):
        a.apply(np.zeros(3), 0.5, 4.0, mu_ref)


def _toy_data(seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Two classes (0 = neutral reference, 1 = angry) separated along feature 0, and a large
    per-speaker offset along every feature (voice/line), which normalisation must remove."""
    rng = np.random.default_rng(seed)
    rows, ys, spks = [], [], []
    for s in range(30):
        offset = rng.normal(0.0, 1.5, 8)
        for k in range(60):
            y = k % 2
            x = offset + rng.normal(0.0, 1.0, 8)
            x[0] += 2.0 * y
            rows.append(x)
            ys.append(y)
            spks.append(f"s{s}")
    x = np.asarray(rows, dtype=np.float32)
    return {"clean": x}, np.asarray(ys), np.asarray(spks)


def test_two_stage_head_learns_and_uses_speaker_history() -> None:
    pooled, y, spk = _toy_data()
    train = np.flatnonzero(np.isin(spk, [f"s{i}" for i in range(20)]))
    test = np.flatnonzero(~np.isin(spk, [f"s{i}" for i in range(20)]))
    head = fit_refnorm_head(pooled, train, y, spk, 1, 2, [0], 1.0, 4.0, ["clean"])
    assert isinstance(head, RefNormLinearHead)

    def ua(logits: np.ndarray) -> float:
        pred = logits.argmax(1)
        return float(np.mean([np.mean(pred[y[test] == c] == c) for c in (0, 1)]))

    no_history = head.logits_from_pooled(pooled["clean"][test], [None] * len(test))
    with_history = np.zeros_like(no_history)
    for s in sorted(set(spk[test].tolist())):
        idx = np.flatnonzero(spk[test] == s)
        norm = ReferenceNormalizer(head.feature_dim)
        with_history[idx] = head.logits_from_pooled(pooled["clean"][test][idx], [norm] * len(idx))
    # the per-speaker offsets hide the class without history; each speaker's own neutral
    # reference recovers it
    assert ua(with_history) > ua(no_history) + 0.08  # measured 0.755 vs 0.627
    assert ua(with_history) > 0.7
    # forward() on encoder states = the no-history path on their pooled statistics: states
    # of two identical frames pool to [mean = the frame, std = 0]
    frames = pooled["clean"][:, :4]
    as_pooled = np.concatenate([frames, np.zeros_like(frames)], 1)
    head4 = fit_refnorm_head({"clean": as_pooled}, train, y, spk, 1, 2, [0], 1.0, 4.0, ["clean"])
    states = torch.from_numpy(np.repeat(frames[test][None, :, None, :], 2, axis=2))
    with torch.inference_mode():
        fwd = head4(states, torch.ones(len(test), 2, dtype=torch.bool)).numpy()
    nohist = head4.logits_from_pooled(as_pooled[test], [None] * len(test))
    np.testing.assert_allclose(fwd, nohist, atol=1e-4)


def test_cross_validation_reports_stream_first_window_and_one_emotion_rows(
    toy_features: Any,
) -> None:
    from callsense.models.train import cross_validate_refnorm, make_folds

    fs = toy_features(0)
    folds = make_folds(fs, 6, 0)
    res = cross_validate_refnorm(fs, ["neutral", "angry", "sad"], folds, 1.0, ("clean",), 4.0)
    assert set(res["summary"]) == {"clean", "tel", "first", "homogeneous"}
    assert res["summary"]["clean"]["ua_mean"] > 0.8
    for f in res["folds"]:
        assert not set(f["test_speakers"]) & set(f["val_speakers"])
    assert res["_reference"] == [0]
    with pytest.raises(ValueError, match="reference"):
        cross_validate_refnorm(fs, ["a", "b", "c"], folds, 1.0, ("clean",), 4.0)


def test_state_bound_covers_the_largest_state() -> None:
    import json

    from callsense.models.speaker_norm import state_bound

    config = {"head": {"kind": "stats_linear_refnorm", "n_layers": 4, "dim": 512}}
    norm = ReferenceNormalizer(4096)
    norm.acc[:] = np.float32(-3.4e38)
    norm.weight = 1e300 / 3  # the longest float repr
    norm.windows = 10**12
    assert len(json.dumps(norm.state())) <= state_bound(config) < 22_500
    assert state_bound({"head": {"kind": "stats_linear", "n_layers": 4, "dim": 512}}) == 0


def test_means_only_head_reads_no_standard_deviation() -> None:
    """``stats="mean"``: the head reads each layer's mean only (half the features and half the
    per-speaker state); changing the std half of the pooled statistics changes nothing, and the
    head rebuilds from its hparams (as a saved model does) with the same outputs."""
    from callsense.models.head import select_stats
    from callsense.models.speaker_norm import build_head, state_bound

    pooled, y, spk = _toy_data()
    n_layers, dim = 2, 2  # 8 features = 2 layers x [mean 2 | std 2]
    train = np.flatnonzero(np.isin(spk, [f"s{i}" for i in range(20)]))
    test = np.flatnonzero(~np.isin(spk, [f"s{i}" for i in range(20)]))
    args = (pooled, train, y, spk, n_layers, 2, [0], 1.0, 4.0, ["clean"])
    head = fit_refnorm_head(*args, stats="mean")
    both = fit_refnorm_head(*args)
    assert head.feature_dim == 4 and both.feature_dim == 8
    x = pooled["clean"][test]
    np.testing.assert_array_equal(select_stats(x, n_layers, dim, "mean"), x[:, [0, 1, 4, 5]])
    noisy = x.copy()
    noisy[:, [2, 3, 6, 7]] += np.random.default_rng(2).normal(0, 5, (len(x), 4))
    norm_a, norm_b = ReferenceNormalizer(4), ReferenceNormalizer(4)
    np.testing.assert_allclose(
        head.logits_from_pooled(x, [norm_a] * len(x)),
        head.logits_from_pooled(noisy, [norm_b] * len(x)),
        atol=1e-5,
    )
    assert not np.allclose(
        both.logits_from_pooled(x, [None] * len(x)),
        both.logits_from_pooled(noisy, [None] * len(x)),
        atol=1e-3,
    )
    rebuilt = build_head(head.hparams)
    rebuilt.load_state_dict(head.state_dict())
    np.testing.assert_array_equal(
        rebuilt.logits_from_pooled(x, [None] * len(x)), head.logits_from_pooled(x, [None] * len(x))
    )
    cfg = {"head": head.hparams}
    assert state_bound(cfg) < state_bound({"head": both.hparams})
    assert len(json.dumps(norm_a.state())) <= state_bound(cfg)
    with pytest.raises(ValueError, match="unknown statistics"):
        fit_refnorm_head(*args, stats="median")
