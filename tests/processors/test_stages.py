"""Stage code on real speech (RAVDESS via ``shared_data``) and synthetic edge cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from callsense.processors.stages import (
    SpeakerPipeline,
    StageConfig,
    StageError,
    Window,
    chunk_audio,
    classify,
    speakers_for,
)

SR = 16000
ALL_ROLES = ("customer", "agent", "unknown")


def stage_cfg(**kw: Any) -> StageConfig:
    """Stage mechanics under test: every role's windows emitted."""
    return StageConfig(emotion_roles=ALL_ROLES, **kw)


def _clips(shared: Path, actor: str, emotion: str, n: int) -> list[np.ndarray]:
    rows = list(csv.DictReader(open(shared / "ravdess" / "MANIFEST.csv")))
    paths = [r["path"] for r in rows if r["speaker"] == actor and r["emotion"] == emotion][:n]
    out = []
    for p in paths:
        x, sr = sf.read(shared / "ravdess" / p, dtype="float32")
        assert sr == SR
        out.append(x)
    return out


@pytest.fixture(scope="module")
def speech(shared_data: Path) -> np.ndarray:
    """~15 s of real speech: 4 RAVDESS utterances, 1 s of silence before each."""
    parts = []
    for clip in _clips(shared_data, "ravdess_03", "angry", 4):
        parts += [np.zeros(SR, np.float32), clip]
    return np.concatenate(parts)


def run(pipe: SpeakerPipeline, x: np.ndarray, sr: int, chunk_ms: int = 250) -> list[Window]:
    out: list[Window] = []
    for _seq, start, chunk in chunk_audio(x[None, :], sr, chunk_ms):
        out += pipe.push(chunk[0], start)
    return out + pipe.flush()


def same(a: list[Window], b: list[Window]) -> bool:
    return len(a) == len(b) and all(
        (x.start_ms, x.end_ms, x.speaker, x.role) == (y.start_ms, y.end_ms, y.speaker, y.role)
        and np.array_equal(x.samples, y.samples)
        for x, y in zip(a, b, strict=True)
    )


# ------------------------------------------------------------------------ chunking / speakers


def test_chunk_audio_covers_signal_in_order() -> None:
    x = np.random.default_rng(0).uniform(-1, 1, (2, 44100 + 123)).astype(np.float32)
    chunks = list(chunk_audio(x, 44100, 250))
    assert [c[0] for c in chunks] == list(range(len(chunks)))
    assert chunks[1][1] == 11025 and chunks[0][2].shape == (2, 11025)
    assert chunks[-1][2].shape[1] == (44100 + 123) - 4 * 11025
    assert np.array_equal(np.concatenate([c[2] for c in chunks], axis=1), x)
    with pytest.raises(StageError, match="2-D"):
        list(chunk_audio(x[0], 44100, 250))


def test_speakers_for_roles() -> None:
    assert speakers_for(1, 0) == [("spk0", "unknown", None)]
    assert speakers_for(2, 0) == [("ch0", "agent", 0), ("ch1", "customer", 1)]
    assert speakers_for(2, 1) == [("ch0", "customer", 0), ("ch1", "agent", 1)]
    with pytest.raises(StageError, match="mono or stereo"):
        speakers_for(3, 0)


# ------------------------------------------------------------------------ VAD and windowing


def test_silence_and_low_noise_give_no_windows() -> None:
    cfg = stage_cfg()
    pipe = SpeakerPipeline(cfg, SR)
    assert run(pipe, np.zeros(10 * SR, np.float32), SR) == []
    assert pipe.talk_time_s == 0.0
    noise = np.random.default_rng(1).normal(0, 1e-4, 10 * SR).astype(np.float32)
    pipe = SpeakerPipeline(cfg, SR)
    assert run(pipe, noise, SR) == []


def test_windows_cover_speech_only_with_call_times(speech: np.ndarray) -> None:
    cfg = stage_cfg()
    pipe = SpeakerPipeline(cfg, SR, speaker="ch1", role="customer")
    lead = 5 * SR  # 5 s of silence before the speech: no window may start there
    x = np.concatenate([np.zeros(lead, np.float32), speech])
    wins = run(pipe, x, SR)
    talk = pipe.talk_time_s
    # the VAD keeps speech, not the 1 s pauses: talk time well below the signal length
    assert 0.4 * len(speech) / SR < talk < 0.9 * len(speech) / SR
    n_full = int((talk * SR - cfg.window_samples) // cfg.hop_samples) + 1
    assert len(wins) in (n_full, n_full + 1)  # + at most one tail window at flush
    assert all(w.speaker == "ch1" and w.role == "customer" for w in wins)
    assert all(len(w.samples) == cfg.window_samples for w in wins[:n_full])
    assert all(w.samples.dtype == np.float32 for w in wins)
    starts = [w.start_ms for w in wins]
    assert starts == sorted(set(starts))
    assert wins[0].start_ms >= 5000 + 900  # speech starts after 5 s + 1 s of silence
    for w in wins:
        # a window spans at least its speech and more when it bridges a pause
        assert w.end_ms - w.start_ms >= len(w.samples) * 1000 // SR - 2
    assert wins[-1].end_ms <= len(x) * 1000 // SR
    # hop is 1 s of *speech*: consecutive starts are at least 1 s of call time apart
    assert all(b - a >= 999 for a, b in zip(starts, starts[1:], strict=False))


def test_window_samples_are_the_input_speech(speech: np.ndarray) -> None:
    """At 16 kHz without denoising, a window is a concatenation of the input frames."""
    pipe = SpeakerPipeline(stage_cfg(), SR)
    wins = run(pipe, speech, SR)
    w = wins[0]
    pcm = np.clip(np.rint(speech * 32768), -32768, 32767).astype(np.int16)
    first = int(round(w.start_ms * SR / 1000))
    head = (w.samples[:480] * 32768).astype(np.int16)
    assert np.array_equal(head, pcm[first : first + 480])


def test_short_speaker_gets_one_short_window_or_none(speech: np.ndarray) -> None:
    cfg = stage_cfg()
    clip = speech[2 * SR : 2 * SR + int(1.6 * SR)]  # 1.6 s inside the first utterance
    wins = run(SpeakerPipeline(cfg, SR), clip, SR)
    assert len(wins) == 1 and cfg.min_window_s * SR <= len(wins[0].samples) < cfg.window_samples
    tiny = speech[2 * SR : 2 * SR + int(0.5 * SR)]
    assert run(SpeakerPipeline(cfg, SR), tiny, SR) == []


def test_custom_window_and_hop(speech: np.ndarray) -> None:
    cfg = stage_cfg(window_s=2.0, hop_s=0.5)
    wins = run(SpeakerPipeline(cfg, SR), speech, SR)
    assert all(len(w.samples) == 32000 for w in wins[:-1])
    assert len(wins) > len(run(SpeakerPipeline(stage_cfg(), SR), speech, SR))


# ------------------------------------------------------------------------ determinism / state


@pytest.mark.parametrize("rate", [16000, 44100, 8000])
def test_deterministic_and_chunking_independent(speech: np.ndarray, rate: int) -> None:
    from callsense.models.audio import resample

    x = resample(speech, SR, rate) if rate != SR else speech
    cfg = stage_cfg()
    a = run(SpeakerPipeline(cfg, rate), x, rate, 250)
    b = run(SpeakerPipeline(cfg, rate), x, rate, 250)
    c = run(SpeakerPipeline(cfg, rate), x, rate, 37)
    assert len(a) >= 5
    assert same(a, b) and same(a, c)


@pytest.mark.parametrize(
    "rate,nr", [(16000, False), (48000, False), (22050, True)], ids=["16k", "48k", "22k-denoise"]
)
def test_state_round_trip_mid_stream(speech: np.ndarray, rate: int, nr: bool) -> None:
    from callsense.models.audio import resample

    x = resample(speech, SR, rate) if rate != SR else speech
    if nr:  # noise reduction is the slow stage: half the speech is enough
        x = x[: len(x) // 2]
    cfg = stage_cfg(noise_reduction=nr)
    ref = run(SpeakerPipeline(cfg, rate, "ch0", "agent"), x, rate)
    chunks = list(chunk_audio(x[None, :], rate, 250))
    # before the first window, then every few chunks (inside and between utterances)
    for cut in range(3, len(chunks), 14 if nr else 5):
        pipe = SpeakerPipeline(cfg, rate, "ch0", "agent")
        got: list[Window] = []
        for i, (_seq, start, chunk) in enumerate(chunks):
            if i == cut:
                state = json.loads(json.dumps(pipe.to_state()))
                pipe = SpeakerPipeline.from_state(cfg, state)
            got += pipe.push(chunk[0], start)
        got += pipe.flush()
        assert same(ref, got), f"restored at chunk {cut}"
    assert len(json.dumps(state)) < 400_000  # state stays small enough for a changelog topic


def test_state_rejects_changed_settings(speech: np.ndarray) -> None:
    pipe = SpeakerPipeline(stage_cfg(), SR)
    pipe.push(speech[:SR], 0)
    with pytest.raises(StageError, match="different stage settings"):
        SpeakerPipeline.from_state(stage_cfg(window_s=2.0), pipe.to_state())


def test_resampled_stream_keeps_call_times(speech: np.ndarray) -> None:
    """The same speech at 8 kHz and 48 kHz: windows at (nearly) the same call times."""
    from callsense.models.audio import resample

    a = run(SpeakerPipeline(stage_cfg(), 48000), resample(speech, SR, 48000), 48000)
    b = run(SpeakerPipeline(stage_cfg(), SR), speech, SR)
    assert abs(len(a) - len(b)) <= 1
    for wa, wb in zip(a, b, strict=False):
        assert abs(wa.start_ms - wb.start_ms) <= 90  # ≤ 3 VAD frames


def test_block_resampler_matches_one_shot_soxr() -> None:
    import soxr
    from callsense.processors.stages import _make_resampler, to_pcm16

    t = np.arange(int(2.3 * 44100)) / 44100
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)).astype(np.float32)
    rs = _make_resampler(44100, SR)
    parts = [rs.push(to_pcm16(x[i : i + 1000])) for i in range(0, len(x), 1000)]
    y = np.concatenate(parts + [rs.flush()]).astype(np.float32) / 32768
    ref = soxr.resample(x, 44100, SR, quality="HQ")
    assert len(y) == len(x) * SR // 44100
    n = min(len(y), len(ref))
    err = np.abs(y[200 : n - 200] - ref[200 : n - 200])  # ignore the stream edges
    assert err.max() < 2e-3, err.max()


# ------------------------------------------------------------------------ bad input


def test_bad_chunks_raise_clear_errors(speech: np.ndarray) -> None:
    pipe = SpeakerPipeline(stage_cfg(), SR)
    pipe.push(speech[:4000], 0)
    bad = speech[4000:8000].copy()
    bad[10] = np.nan
    with pytest.raises(StageError, match="NaN"):
        pipe.push(bad, 4000)
    with pytest.raises(StageError, match="1-D"):
        pipe.push(speech[None, 4000:8000], 4000)
    with pytest.raises(StageError, match="replayed"):
        pipe.push(speech[2000:6000], 2000)
    with pytest.raises(StageError, match="numeric"):
        pipe.push(np.array(["a", "b"]), 4000)
    # the rejected chunks changed nothing: the stream continues as if they never came
    ref = SpeakerPipeline(stage_cfg(), SR)
    ref.push(speech[:4000], 0)
    assert same(pipe.push(speech[4000:], 4000), ref.push(speech[4000:], 4000))
    assert same(pipe.flush(), ref.flush())
    with pytest.raises(StageError, match="after the end"):
        pipe.push(speech[:100], len(speech))
    with pytest.raises(StageError, match="sample rate"):
        SpeakerPipeline(stage_cfg(), 0)


def test_gap_is_filled_with_silence(speech: np.ndarray) -> None:
    """A lost chunk: later audio keeps its call time (silence fills the gap)."""
    cfg = stage_cfg()
    full = run(SpeakerPipeline(cfg, SR), speech, SR)
    pipe = SpeakerPipeline(cfg, SR)
    got: list[Window] = []
    for _seq, start, chunk in chunk_audio(speech[None, :], SR, 250):
        if 0 < start < SR:  # drop the chunks inside the leading second of silence
            continue
        got += pipe.push(chunk[0], start)
    got += pipe.flush()
    assert same(full, got)
    with pytest.raises(StageError, match="missing audio"):
        pipe2 = SpeakerPipeline(cfg, SR)
        pipe2.push(speech[:100], 0)
        pipe2.push(speech[:100], 100 + 3601 * SR)


def test_pcm16_convention_round_trips_exactly(speech: np.ndarray) -> None:
    """to_pcm16 -> from_pcm16 (the Kafka path) gives the same windows as the float input."""
    from callsense.processors.stages import from_pcm16, to_pcm16

    ints = np.arange(-32768, 32768, dtype=np.int16)
    assert np.array_equal(to_pcm16(from_pcm16(ints)), ints)
    wire = from_pcm16(to_pcm16(speech))
    a = run(SpeakerPipeline(stage_cfg(), SR), speech, SR)
    b = run(SpeakerPipeline(stage_cfg(), SR), wire, SR)
    assert same(a, b)


# ------------------------------------------------------------------------ classify (real model)


@pytest.fixture(scope="module")
def model() -> Any:
    from callsense.models import EmotionModel

    from callsense.settings import Settings

    model_dir = Settings().model_dir
    if not (model_dir / "model.json").is_file():
        pytest.fail(f"no emotion model artefact at {model_dir} (the repository ships one)")
    return EmotionModel.load(model_dir, threads=1)


def test_classify_angry_speech_with_verdicts_and_smoothing(model: Any, speech: np.ndarray) -> None:
    from callsense.models import TemporalSmoother

    from callsense.storage.schema import EmotionWindow

    wins = run(SpeakerPipeline(stage_cfg(), SR, "ch1", "customer"), speech, SR)
    smoothers: dict = {}
    res = classify(model, wins[:4], smoothers, threshold=0.45) + classify(
        model, wins[4:], smoothers, threshold=0.45
    )
    assert [(r.start_ms, r.end_ms) for r in res] == [(w.start_ms, w.end_ms) for w in wins]
    assert sum(r.raw_label == "angry" for r in res) > len(res) / 2  # actor 3, acted anger
    assert isinstance(smoothers["ch1"], TemporalSmoother) and smoothers["ch1"].count == len(res)
    for r in res:
        assert r.confidence == pytest.approx(max(r.probabilities.values()))
        assert r.label == ("uncertain" if r.confidence < 0.45 else r.raw_label)
        assert sum(r.smoothed_probabilities.values()) == pytest.approx(1.0)
    row = res[0].to_row("c1")
    assert set(row) <= {c.name for c in EmotionWindow.__table__.columns}
    assert row["call_id"] == "c1" and row["speaker"] == "ch1" and row["role"] == "customer"
    # batching does not change results; a threshold of 1 makes every window uncertain
    again = classify(model, wins, {}, threshold=1.0)
    assert [r.raw_label for r in again] == [r.raw_label for r in res]
    assert all(r.uncertain and r.label == "uncertain" for r in again)
    assert classify(model, [], {}, 0.45) == []


def test_classify_windows_at_another_internal_rate(model: Any, speech: np.ndarray) -> None:
    """StageConfig(sample_rate=8000): windows say their rate and the model is told it."""
    cfg = stage_cfg(sample_rate=8000)
    wins = run(SpeakerPipeline(cfg, SR), speech, SR)
    assert wins and all(w.sample_rate == 8000 and len(w.samples) <= 24000 for w in wins)
    res = classify(model, wins, {}, threshold=0.45)
    assert sum(r.raw_label == "angry" for r in res) > len(res) / 2
    mixed = [wins[0], run(SpeakerPipeline(stage_cfg(), SR), speech, SR)[0]]
    with pytest.raises(StageError, match="share a sample rate"):
        classify(model, mixed, {}, threshold=0.45)


def test_roles_outside_emotion_roles_get_talk_time_but_no_windows(speech: np.ndarray) -> None:
    """Customer only by default (EU AI Act Art. 5(1)(f)): the agent's speech is counted (talk
    time) but neither kept nor cut into windows, so nothing of it reaches inference or the
    checkpoint."""
    default = StageConfig()
    assert default.emotion_roles == ("customer",) and default.roles_notice() is None
    agent = SpeakerPipeline(default, SR, "ch0", "agent")
    unknown = SpeakerPipeline(default, SR, "spk0", "unknown")
    customer = SpeakerPipeline(default, SR, "ch1", "customer")
    assert run(agent, speech, SR) == [] and run(unknown, speech, SR) == []
    wins = run(customer, speech, SR)
    assert wins and {w.role for w in wins} == {"customer"}
    assert agent.talk_time_s == customer.talk_time_s > 5.0
    assert customer.windows_emitted == len(wins) and agent.windows_emitted == 0
    assert agent.to_state()["speech"] == "" and len(customer.to_state()["speech"]) > 10_000
    opted = StageConfig(emotion_roles=("customer", "agent"))
    assert "Art. 5(1)(f)" in (opted.roles_notice() or "")
    assert [w.start_ms for w in run(SpeakerPipeline(opted, SR, "ch0", "agent"), speech, SR)] == [
        w.start_ms for w in wins
    ]


def test_emotion_roles_setting_parses_and_refuses_unknown_roles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    from callsense.settings import Settings

    assert Settings().emotion_roles == ("customer",)
    monkeypatch.setenv("CALLSENSE_EMOTION_ROLES", "customer, Agent")
    assert StageConfig.from_settings(Settings()).emotion_roles == ("customer", "agent")
    monkeypatch.setenv("CALLSENSE_EMOTION_ROLES", "customer,boss")
    with pytest.raises(ValidationError, match="boss"):
        Settings()
