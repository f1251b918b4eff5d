"""``models/train.py``: the linear-head cross-validation on a small synthetic feature set."""

from __future__ import annotations

from typing import Any


def test_linear_cross_validation_reports_folds_and_variants(toy_features: Any) -> None:
    from callsense.models.train import cross_validate_linear, make_folds

    fs = toy_features(1, tel_noise=3.0)
    folds = make_folds(fs, 6, 0)
    res = cross_validate_linear(fs, ["neutral", "angry", "sad"], folds, 1.0, ("clean",))
    assert res["config"] == {
        "head": "stats_linear", "C": 1.0, "train_variants": ["clean"], "refit_train_val": True,
        "balance": "class",
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


def test_corpus_balance_weights() -> None:
    """Every corpus weighs the same and, within it, every class it has; then the classes weigh
    the same overall; mean weight 1."""
    import numpy as np
    from callsense.models.train import balance_weights

    y = np.array([0, 0, 0, 0, 1, 1, 0, 1, 2, 2])
    g = np.array(["a"] * 6 + ["b"] * 2 + ["c"] * 2)
    w = balance_weights(y, g, 3)
    assert np.isclose(w.mean(), 1.0)
    assert np.allclose([w[y == k].sum() for k in range(3)], len(y) / 3)
    # within a corpus, each class it has the same total; rows of one cell the same weight
    assert np.isclose(w[(g == "a") & (y == 0)].sum() / w[(g == "a") & (y == 1)].sum(), 2 / 2)
    assert len(set(np.round(w[(g == "a") & (y == 0)], 12))) == 1
    # corpus b's single class-0 clip carries what corpus a's four class-0 clips carry together
    assert np.isclose(w[(g == "b") & (y == 0)].sum(), w[(g == "a") & (y == 0)].sum())


def test_corpus_balanced_loco_and_corpus_subset(toy_features: Any) -> None:
    """``--balance corpus`` is recorded and changes the fit; ``--corpora`` keeps those corpora's
    clips only, aligned across labels, speakers, items and every variant."""
    from pathlib import Path

    import numpy as np
    from callsense.models.data import Item
    from callsense.models.train import cross_validate_linear, make_folds

    fs = toy_features(3, tel_noise=1.0)
    corpus = {f"s{i:02d}": ("x" if i < 8 else "y" if i < 10 else "z") for i in range(12)}
    fs.items = [Item(Path(f"{i}.wav"), str(s), "", corpus[str(s)]) for i, s in
                enumerate(fs.speakers)]  # fmt: skip
    folds = make_folds(fs, 6, 0, protocol="loco")
    labels = ["angry", "neutral", "sad"]
    by_class = cross_validate_linear(fs, labels, folds, 1.0, ("clean", "tel"))
    by_corpus = cross_validate_linear(fs, labels, folds, 1.0, ("clean", "tel"), balance="corpus")
    assert by_corpus["config"]["balance"] == "corpus"
    # fold "z" trains on x (8 speakers) and y (2): corpus y now weighs as much as x
    w_class = by_class["_heads"][2].out.weight.detach().numpy()
    w_corpus = by_corpus["_heads"][2].out.weight.detach().numpy()
    assert not np.allclose(w_class, w_corpus, atol=1e-3)
    assert by_corpus["summary"]["clean"]["ua_mean"] > 0.8

    rows = np.flatnonzero(np.isin(fs.corpora, ["y", "z"]))
    sub = fs.subset(rows)
    assert set(sub.corpora.tolist()) == {"y", "z"} and len(sub.y) == 80
    assert [it.speaker for it in sub.items] == sub.speakers.tolist()
    assert np.array_equal(sub.states["tel"], fs.states["tel"][rows])
    assert np.array_equal(sub.y, fs.y[rows])


def _three_corpora(fs: Any) -> dict[str, str]:
    from pathlib import Path

    from callsense.models.data import Item

    corpus = {f"s{i:02d}": ("x" if i < 4 else "y" if i < 8 else "z") for i in range(12)}
    fs.items = [Item(Path(f"{i}.wav"), str(s), "", corpus[str(s)]) for i, s in
                enumerate(fs.speakers)]  # fmt: skip
    return corpus


def test_nested_corpus_temperature_holds_out_each_training_corpus(toy_features: Any) -> None:
    """``--calibration corpora``: no validation speakers; the temperature is fitted on each
    training corpus held out of a nested fit, and one whose removal leaves a class untrained is
    skipped."""
    import numpy as np
    from callsense.models.train import (
        cross_validate_linear,
        fit_linear,
        make_folds,
        nested_corpus_temperature,
    )

    fs = toy_features(4)
    _three_corpora(fs)
    folds = make_folds(fs, 6, 0, protocol="loco", calibration="corpora")
    assert all(f.val == () for f in folds)
    res = cross_validate_linear(
        fs, ["angry", "neutral", "sad"], folds, 1.0, ("clean",), calibration="corpora"
    )
    assert res["summary"]["clean"]["ua_mean"] > 0.8
    assert all(f["n_train"] == 160 for f in res["folds"])  # two corpora, nothing held back

    pooled = fs.pooled()
    seen: list[set[str]] = []

    def fit(rows: np.ndarray) -> Any:
        seen.append(set(fs.corpora[rows].tolist()))
        if "x" not in seen[-1]:  # pretend corpus x alone has class "sad"
            raise ValueError("training data covers 2 of 3 classes")
        return fit_linear(pooled["clean"][rows], fs.y[rows], 3, 1, 1.0)

    def logits_of(head: Any, rows: np.ndarray) -> np.ndarray:
        from callsense.models.train import _linear_logits

        return _linear_logits(head, pooled["clean"][rows])

    rows = np.flatnonzero(fs.corpora != "z")
    temp, inner = nested_corpus_temperature(fs, rows, fit, logits_of)
    assert seen == [{"y"}, {"x"}]  # x held out (skipped: y lacks a class), then y held out
    assert list(inner) == ["y"] and 0.05 < temp < 20


def test_speaker_folds_over_several_corpora_report_each_corpus(toy_features: Any) -> None:
    """Speaker folds over a multi-corpus set: every corpus's speakers are tested once and its
    metrics are pooled per corpus (the within-corpus score of a multi-corpus head)."""
    from pathlib import Path

    from callsense.models.data import Item
    from callsense.models.train import cross_validate_linear, make_folds

    fs = toy_features(5)
    fs.items = [Item(Path(f"{i}.wav"), str(s), "", "xyz"[int(str(s)[1:]) // 4]) for i, s in
                enumerate(fs.speakers)]  # fmt: skip
    folds = make_folds(fs, 3, 0)
    assert all(len({int(s[1:]) // 4 for s in f.test}) == 3 for f in folds)  # every corpus
    res = cross_validate_linear(fs, ["angry", "neutral", "sad"], folds, 1.0, ("clean",))
    by = res["summary"]["clean"]["by_corpus"]
    assert sorted(by) == ["x", "y", "z"]
    assert all(m["n"] == 80 and m["ua"] > 0.8 for m in by.values())
