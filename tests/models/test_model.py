"""The shipped emotion model: offline load, real clips, bad input, int8, thread safety."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from callsense.models import AudioError, EmotionModel, verdict
from callsense.models.audio import load_audio
from callsense.models.data import read_manifest
from callsense.models.labels import LabelSet

PER_CLASS = 6  # clips per class from held-out-style sampling (fixed, spread over actors)


@pytest.fixture(scope="module")
def model(monkeypatch_module: pytest.MonkeyPatch) -> EmotionModel:
    return EmotionModel.load()


@pytest.fixture(scope="module")
def monkeypatch_module() -> pytest.MonkeyPatch:
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_loads_and_predicts_with_network_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    m = EmotionModel.load(threads=1)
    assert m.labels == ["angry", "happy", "neutral", "sad"] and m.sample_rate == 16000
    assert m.window_s == 3.0
    rng = np.random.default_rng(0)
    probs = m.predict((0.05 * rng.standard_normal((2, 48000))).astype(np.float32), 16000)
    assert probs.shape == (2, 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    label, conf, uncertain = verdict(probs[0], m.labels, 0.45)
    assert label in m.labels and uncertain == (conf < 0.45)


def _real_clips(shared: Path, model: EmotionModel) -> tuple[list[np.ndarray], list[int]]:
    items = read_manifest(shared / "ravdess" / "MANIFEST.csv")
    ls = LabelSet.from_dict(model.config["label_set"])
    xs, ys, per = [], [], {}
    for it in items[::7]:  # spread over all actors and statements
        idx = ls.index(it.emotion)
        if idx is None or per.get(idx, 0) >= PER_CLASS:
            continue
        audio, sr = load_audio(it.path)
        assert sr == 16000
        xs.append(audio[0])
        ys.append(idx)
        per[idx] = per.get(idx, 0) + 1
    return xs, ys


def test_beats_chance_on_real_clips(shared_data: Path, model: EmotionModel) -> None:
    xs, ys = _real_clips(shared_data, model)
    probs = model.predict(xs, 16000)
    acc = float((probs.argmax(1) == np.array(ys)).mean())
    chance = 1 / len(model.labels)
    # RAVDESS actors were seen in training: this checks the shipped artefact works end to end
    # (cross-validated, speaker-independent accuracy is in MODEL_CARD.md)
    assert acc >= chance + 0.35, (acc, chance)


def test_loud_neutral_is_not_called_angry(shared_data: Path, model: EmotionModel) -> None:
    items = read_manifest(shared_data / "ravdess" / "MANIFEST.csv")
    neutral = [it for it in items if it.emotion == "neutral"][::8]
    quiet = [load_audio(it.path)[0][0] for it in neutral]
    loud = [np.clip(x * 10 ** (18 / 20), -1, 1) for x in quiet]  # +18 dB (angry-like level)
    p_q = model.predict(quiet, 16000)
    p_l = model.predict(loud, 16000)
    angry = model.labels.index("angry")
    assert (p_l.argmax(1) == angry).mean() <= 0.25
    np.testing.assert_allclose(p_q, p_l, atol=0.1)  # level-normalised: gain barely matters


@pytest.mark.parametrize(
    ("windows", "sr", "message"),
    [
        (np.zeros((1, 0), np.float32), 16000, "empty"),
        (np.full((1, 16000), np.nan, np.float32), 16000, "NaN"),
        (np.zeros((1, 4000), np.float32), 16000, "at least 0.5 s"),
        ([], 16000, "no windows"),
        (np.zeros(48000, np.float32), 16000, "1-D"),
        (["not audio"], 16000, "numeric"),
    ],
)
def test_bad_input_raises_clear_error(
    model: EmotionModel, windows: object, sr: int, message: str
) -> None:
    with pytest.raises(AudioError, match=message):
        model.predict(windows, sr)  # type: ignore[arg-type]


def test_8khz_stereo_and_long_input_are_handled(shared_data: Path, model: EmotionModel) -> None:
    from callsense.models.audio import resample

    audio, _ = load_audio(shared_data / "ravdess" / "Actor_01" / "03-01-05-02-01-01-01.flac")
    x = audio[0]
    ref = model.predict([x], 16000)[0]
    x8 = resample(x, 16000, 8000)
    p8 = model.predict([x8], 8000)[0]
    stereo = np.stack([x, x])
    ps = model.predict([stereo], 16000)[0]
    long = np.concatenate([x, x, x])  # longer than a window: averaged over windows
    pl = model.predict([long], 16000)[0]
    for p in (p8, ps, pl):
        assert p.shape == ref.shape and abs(p.sum() - 1) < 1e-6
    np.testing.assert_allclose(ps, ref, atol=1e-4)
    assert int(p8.argmax()) == int(ref.argmax())


def test_thread_safe_predictions_match(model: EmotionModel) -> None:
    rng = np.random.default_rng(1)
    batch = (0.05 * rng.standard_normal((3, 48000))).astype(np.float32)
    ref = model.predict(batch, 16000)
    out: list[np.ndarray] = []

    def run() -> None:
        out.append(model.predict(batch, 16000))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 4
    for o in out:
        np.testing.assert_allclose(o, ref, atol=1e-5)


def test_int8_path_close_to_fp32(shared_data: Path, model: EmotionModel) -> None:
    xs, ys = _real_clips(shared_data, model)
    q = EmotionModel.load(int8=True)
    p32, p8 = model.predict(xs[:12], 16000), q.predict(xs[:12], 16000)
    agree = float((p32.argmax(1) == p8.argmax(1)).mean())
    assert agree >= 0.8, agree


def test_int8_result_does_not_depend_on_batch_company(shared_data: Path) -> None:
    """The stream batches windows across calls, offline analysis per file: a window's int8
    probabilities must not change with the windows it shares a batch with."""
    q = EmotionModel.load(int8=True)
    xs, _ = _real_clips(shared_data, q)
    alone = np.concatenate([q.predict([x], 16000) for x in xs[:6]])
    together = q.predict(xs[:6], 16000)
    np.testing.assert_array_equal(alone, together)


def test_evaluate_cli_reports_excluded_labels(shared_data: Path, tmp_path: Path) -> None:
    import json

    from callsense.models.cli import evaluate_cmd
    from click.testing import CliRunner

    src = (shared_data / "ravdess" / "MANIFEST.csv").read_text().splitlines()
    rows = src[1:][::83]  # 18 clips spread over actors and emotions, incl. fear
    root = shared_data / "ravdess"
    lines = ["path,speaker,emotion"] + [
        f"{root / r.split(',')[0]},{r.split(',')[1]},{r.split(',')[2]}" for r in rows
    ]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(
        evaluate_cmd, ["--manifest", str(tmp_path / "m.csv"), "--out", str(tmp_path / "ev")]
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    emotions = [r.split(",")[2] for r in rows]
    outside = {e for e in emotions if e in {"fear", "disgust", "surprise"}}
    assert set(metrics["excluded"]) == outside and outside
    assert metrics["n"] == sum(e not in outside for e in emotions)
    assert {"ua", "wa", "macro_f1", "ece", "per_class", "confusion"} <= set(metrics)
    assert metrics["speaker_normalisation"].startswith("per speaker")
    assert (tmp_path / "ev" / "confusion.png").stat().st_size > 1000


def test_speaker_state_is_batch_and_checkpoint_invariant(shared_data: Path) -> None:
    """The shipped model normalises per speaker. The stream classifies a speaker's windows a
    few at a time (batched with other calls, state restored from checkpoints), offline analysis
    in larger batches: the same windows in the same order must give the same probabilities."""
    q = EmotionModel.load(int8=True)
    assert q.uses_speaker_state
    items = read_manifest(shared_data / "ravdess" / "MANIFEST.csv")
    clips = [load_audio(it.path)[0][0] for it in items if it.speaker == "ravdess_05"][::6][:8]
    one_go = q.predict(clips, 16000, speakers=[q.new_speaker_state()] * len(clips))
    state = q.new_speaker_state()
    piecewise = []
    for i in range(0, len(clips), 3):  # 3 windows per micro-batch, checkpoint in between
        state = q.speaker_state_from(state.state())
        piecewise.append(
            q.predict(clips[i : i + 3], 16000, speakers=[state] * len(clips[i : i + 3]))
        )
    np.testing.assert_array_equal(one_go, np.concatenate(piecewise))
    # history matters: without it every clip is classified as the speaker's first
    first = q.predict(clips, 16000)
    assert not np.allclose(first[1:], one_go[1:])
    # clips longer than the 3 s model window are classified in parts; each part is one update
    assert state.windows == sum(len(p) for p in q.embed(clips, 16000)) > len(clips)
