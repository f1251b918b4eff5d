"""``models/train.py``: the linear-head cross-validation on a small synthetic feature set."""

from __future__ import annotations

from typing import Any


def test_linear_cross_validation_reports_folds_and_variants(toy_features: Any) -> None:
    from callsense.models.train import cross_validate_linear, make_folds

    fs = toy_features(1, tel_noise=3.0)
    folds = make_folds(fs, 6, 0)
    res = cross_validate_linear(fs, ["neutral", "angry", "sad"], folds, 1.0, ("clean",))
    assert res["config"] == {
        "head": "stats_linear", "C": 1.0, "train_variants": ["clean"], "refit_train_val": True
    }  # fmt: skip
    assert len(res["folds"]) == 6
    for f in res["folds"]:
        assert not set(f["test_speakers"]) & set(f["val_speakers"])
        assert f["n_train"] == 20 * (12 - len(f["test_speakers"]) - len(f["val_speakers"]))
    clean, tel = res["summary"]["clean"]["ua_mean"], res["summary"]["tel"]["ua_mean"]
    assert clean > 0.8  # the class signal is easy on clean features
    assert tel < clean  # and degraded by the noise on the "tel" variant


def test_leave_one_corpus_out_cross_validation(toy_features: Any) -> None:
    """``--protocol loco``: one fold per corpus, named after it, testing all its speakers; the
    summary carries the angry-vs-rest AUC."""
    from pathlib import Path

    from callsense.models.data import Item
    from callsense.models.train import cross_validate_linear, make_folds

    fs = toy_features(2)
    corpus = {f"s{i:02d}": ("x" if i < 4 else "y" if i < 8 else "z") for i in range(12)}
    fs.items = [Item(Path(f"{i}.wav"), str(s), "", corpus[str(s)]) for i, s in
                enumerate(fs.speakers)]  # fmt: skip
    folds = make_folds(fs, 6, 0, protocol="loco")
    assert [f.name for f in folds] == ["x", "y", "z"]
    res = cross_validate_linear(fs, ["angry", "neutral", "sad"], folds, 1.0, ("clean",))
    assert [f["corpus"] for f in res["folds"]] == ["x", "y", "z"]
    for f in res["folds"]:
        assert {corpus[s] for s in f["test_speakers"]} == {f["corpus"]}
        assert len(f["val_speakers"]) == 2  # one from each training corpus
    clean = res["summary"]["clean"]
    assert clean["ua_mean"] > 0.8
    assert 0.9 < clean["angry_auc_mean"] <= 1.0
