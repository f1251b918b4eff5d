"""Streaming diarization on real speech: calls built from RAVDESS clips and AMI recordings.

The models are the packaged segmentation-3.0 and CAM++ weights (no mocks); audio is short so
the whole file runs in well under a minute on one thread.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from callsense.processors.diarization import DiarizerConfig, StreamingDiarizer, diarize_array
from callsense.processors.diarization.clustering import OnlineClustering
from callsense.processors.diarization.rttm import der, read_rttm, write_rttm

SR = 16000


@pytest.fixture(scope="module")
def models():
    import torch
    from callsense.processors.diarization.weights import load_models

    torch.set_num_threads(1)
    return load_models()


def _trimmed(path: Path) -> np.ndarray:
    """A RAVDESS utterance without its leading/trailing silence (frame RMS vs. peak)."""
    x, sr = sf.read(str(path), dtype="float32")
    assert sr == SR
    frames = x[: len(x) // 160 * 160].reshape(-1, 160)
    db = 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9)
    speech = np.flatnonzero(db > db.max() - 35)
    return x[speech[0] * 160 : (speech[-1] + 1) * 160]


def _clips(shared: Path, actor: str, n: int) -> list[np.ndarray]:
    with open(shared / "ravdess" / "MANIFEST.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["speaker"] == actor]
    rows = [r for r in rows if r["emotion"] in ("neutral", "calm")][:n]
    return [_trimmed(shared / "ravdess" / r["path"]) for r in rows]


def _build_call(turns: list[list[np.ndarray]], labels: list[str], gap_s: float = 0.6):
    """Concatenate turns (each a list of utterances, 0.15 s apart) with ``gap_s`` pauses."""
    parts: list[np.ndarray] = [np.zeros(int(0.5 * SR), np.float32)]
    ref: list[tuple[str, float, float]] = []
    pos = len(parts[0])
    for label, utts in zip(labels, turns, strict=True):
        start = pos
        for i, u in enumerate(utts):
            if i:
                parts.append(np.zeros(int(0.15 * SR), np.float32))
                pos += int(0.15 * SR)
            parts.append(u)
            pos += len(u)
        ref.append((label, start / SR, pos / SR))
        parts.append(np.zeros(int(gap_s * SR), np.float32))
        pos += int(gap_s * SR)
    rng = np.random.default_rng(0)
    audio = np.concatenate(parts)
    audio = audio + 1e-4 * rng.standard_normal(len(audio)).astype(np.float32)  # line noise
    return audio.astype(np.float32), ref


def _turns(turns: list[tuple[str, float, float]]) -> list[list]:
    """Speaker turns: consecutive runs of the same speaker (pauses inside a turn) merged."""
    out: list[list] = []
    for spk, a, b in sorted(turns, key=lambda t: t[1]):
        if out and out[-1][0] == spk:
            out[-1][2] = max(out[-1][2], b)
        else:
            out.append([spk, a, b])
    return out


def test_two_speaker_call_gets_two_speakers_with_accurate_turns(models, shared_data):
    a = _clips(shared_data, "ravdess_01", 6)  # male
    b = _clips(shared_data, "ravdess_02", 6)  # female
    audio, ref = _build_call(
        [a[0:2], b[0:2], a[2:4], b[2:4], a[4:6], b[4:6]], ["A", "B", "A", "B", "A", "B"]
    )
    diarizer, segments = diarize_array(models, audio, DiarizerConfig())
    assert diarizer.num_speakers == 2
    hyp = _turns(diarizer.turns)
    # same turns in the same order, the first speaker heard is spk0 (agent by default), and
    # every turn starts and ends within 0.5 s of the truth
    assert len(hyp) == len(ref), hyp
    mapping = {"A": "spk0", "B": "spk1"}
    for (label, start, end), (spk, h0, h1) in zip(ref, hyp, strict=True):
        assert spk == mapping[label], hyp
        assert abs(h0 - start) <= 0.5 and abs(h1 - end) <= 0.5, (label, start, end, hyp)
    assert der(ref, diarizer.turns, len(audio) / SR)["der"] < 0.15
    # every returned segment is one speaker's audio, at its place in the call
    assert {s.speaker_id for s in segments} == {"spk0", "spk1"}
    assert {s.role for s in segments} == {"agent", "customer"}
    for s in segments:
        assert (s.role == "agent") == (s.speaker_id == "spk0")
        np.testing.assert_allclose(
            s.samples, audio[s.start_sample : s.start_sample + len(s.samples)], atol=1 / 32768
        )


def test_one_speaker_call_gets_one_speaker(models, shared_data):
    a = _clips(shared_data, "ravdess_03", 6)
    audio, _ = _build_call([a[0:2], a[2:4], a[4:6]], ["A", "A", "A"], gap_s=1.0)
    diarizer, segments = diarize_array(models, audio, DiarizerConfig())
    assert diarizer.num_speakers == 1
    assert {s.speaker_id for s in segments} == {"spk0"}


def test_silence_gets_no_speaker(models, shared_data):
    empty, sr = sf.read(
        str(shared_data / "diarization/ami_pyannote/tests_data/empty.wav"), dtype="float32"
    )
    assert sr == SR
    for audio in (empty, np.zeros(8 * SR, np.float32)):
        diarizer, segments = diarize_array(models, audio, DiarizerConfig())
        assert diarizer.num_speakers == 0
        assert segments == [] and diarizer.turns == []


def test_silence_is_not_segmented_and_speech_is(models, shared_data, monkeypatch):
    """Analysis time follows speech: a silent chunk (hold, comfort noise below -60 dBFS RMS)
    skips the segmentation model; a chunk with speech in it does not."""
    calls = []
    cls = type(models.segmentation)
    segment = cls.__call__

    def counting(self, chunk):
        calls.append(float(np.sqrt(np.mean(np.square(chunk)))))
        return segment(self, chunk)

    monkeypatch.setattr(cls, "__call__", counting)
    rng = np.random.default_rng(0)
    hum = (rng.standard_normal(120 * SR) * 10 ** (-63 / 20)).astype(np.float32)  # -63 dBFS
    d = StreamingDiarizer(models, DiarizerConfig())
    d.push(hum)
    assert calls == [] and d.num_speakers == 0
    d.push(_clips(shared_data, "ravdess_03", 2)[0])
    assert len(calls) > 0 and min(calls) >= 10 ** (-60 / 20)  # each one had speech in it


def test_overlap_is_kept_out_of_segments(models, shared_data):
    wav = shared_data / "diarization/ami_pyannote/sample.wav"
    audio = sf.read(str(wav), dtype="float32")[0]
    diarizer, segments = diarize_array(models, audio, DiarizerConfig())
    assert diarizer.num_speakers == 2
    # frames where the diarizer itself sees two speakers at once
    n = len(audio) // 160
    count = np.zeros(n, int)
    for _, a, b in diarizer.turns:
        count[int(round(a * 100)) : int(round(b * 100))] += 1
    assert (count >= 2).sum() > 0, "sample.wav has overlapped speech; none was detected"
    covered = np.zeros(n, int)
    for s in segments:
        a = s.start_sample // 160
        covered[a : a + len(s.samples) // 160] += 1
    assert covered.max() == 1  # segments never overlap each other
    assert not np.any((covered > 0) & (count >= 2))  # ... nor cover overlapped speech
    assert np.all(count[covered > 0] == 1)


def test_state_round_trip_and_redelivery_are_exact(models, shared_data):
    wav = shared_data / "diarization/ami_pyannote/tests_data/dev00.wav"
    audio = sf.read(str(wav), dtype="float32")[0][: 12 * SR]
    ref_diarizer, ref_segments = diarize_array(models, audio, DiarizerConfig())

    chunk = 4000
    d = StreamingDiarizer(models, DiarizerConfig())
    segments = []
    for i, s in enumerate(range(0, len(audio), chunk)):
        segments += d.push(audio[s : s + chunk], s)
        if i % 3 == 0:  # at-least-once: the same chunk delivered again is ignored
            assert d.push(audio[s : s + chunk], s) == []
        if s == 6 * SR:  # resume on "another worker" from the serialised state
            d = StreamingDiarizer.from_state(models, pickle.loads(pickle.dumps(d.to_state())))
    segments += d.flush()
    assert d.turns == ref_diarizer.turns
    assert [(s.speaker_id, s.start_sample, len(s.samples)) for s in segments] == [
        (s.speaker_id, s.start_sample, len(s.samples)) for s in ref_segments
    ]


def test_labels_are_final_within_the_latency(models, shared_data):
    wav = shared_data / "diarization/ami_pyannote/sample.wav"
    audio = sf.read(str(wav), dtype="float32")[0][: 15 * SR]
    config = DiarizerConfig(latency_s=2.5, step_s=1.25)
    d = StreamingDiarizer(models, config)
    for s in range(0, len(audio), 4000):
        d.push(audio[s : s + 4000], s)
        received = (s + 4000) / SR
        # every frame older than the latency is final (emitted)
        assert d.emitted * 0.01 >= received - config.latency_s - 0.01


def test_bad_input_is_refused(models):
    d = StreamingDiarizer(models, DiarizerConfig())
    with pytest.raises(ValueError, match="mono"):
        d.push(np.zeros((2, 100), np.float32), 0)
    with pytest.raises(ValueError, match="NaN"):
        d.push(np.array([0.0, np.nan], np.float32), 0)
    with pytest.raises(ValueError, match="latency"):
        StreamingDiarizer(models, DiarizerConfig(latency_s=8.0))
    with pytest.raises(ValueError, match="agent_rule"):
        StreamingDiarizer(models, DiarizerConfig(agent_rule="loudest"))


def test_roles_follow_the_configured_rule(models):
    assert StreamingDiarizer(models, DiarizerConfig(agent_rule="first")).role(0) == "agent"
    second = StreamingDiarizer(models, DiarizerConfig(agent_rule="second"))
    assert (second.role(0), second.role(1)) == ("customer", "agent")
    assert StreamingDiarizer(models, DiarizerConfig(agent_rule="none")).role(1) == "unknown"


def test_online_clustering_keeps_labels_and_respects_max_speakers():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((3, 192))
    base /= np.linalg.norm(base, axis=1, keepdims=True)

    def noisy(i: int) -> np.ndarray:
        v = base[i] + 0.2 * rng.standard_normal(192) / np.sqrt(192)
        return v / np.linalg.norm(v)

    c = OnlineClustering(max_speakers=2, delta_new=0.6)
    yes = np.array([True, True])
    assert c.assign(np.stack([noisy(0)]), yes[:1], yes[:1]) == [0]
    assert c.assign(np.stack([noisy(1), noisy(0)]), yes, yes) == [1, 0]
    assert c.assign(np.stack([noisy(0), noisy(1)]), yes, yes) == [0, 1]
    # a third voice cannot open a third speaker when max_speakers is 2
    assert c.assign(np.stack([noisy(2)]), yes[:1], yes[:1])[0] in (0, 1)
    assert c.count == 2
    state = pickle.loads(pickle.dumps(c.to_state()))
    c2 = OnlineClustering(max_speakers=2, delta_new=0.6)
    c2.load_state(state)
    assert c2.assign(np.stack([noisy(1)]), yes[:1], yes[:1]) == [1]
    # too little speech to open a speaker: nothing is opened from nothing
    c3 = OnlineClustering(max_speakers=2)
    assert c3.assign(np.stack([noisy(0)]), np.array([False]), np.array([False])) == [-1]


def test_rttm_round_trip_and_der(tmp_path):
    turns = [("a", 0.0, 2.0), ("b", 2.0, 5.0), ("a", 4.5, 6.0)]
    text = write_rttm(turns, "rec", tmp_path / "x.rttm")
    assert text.count("SPEAKER rec 1") == 3
    back = read_rttm(tmp_path / "x.rttm")["rec"]
    assert sorted(back) == sorted(turns)
    assert der(turns, turns, 6.0)["der"] == 0.0
    # relabelled hypothesis is not an error; a missed turn is
    relabel = [("x" if s == "a" else "y", a, b) for s, a, b in turns]
    assert der(turns, relabel, 6.0)["der"] == 0.0
    scores = der(turns, turns[:2], 6.0)
    assert scores["missed"] == pytest.approx(1.5 / 6.5, abs=1e-6)


def test_diarize_command_writes_rttm_and_scores(shared_data, tmp_path, models):
    import json

    from click.testing import CliRunner

    from callsense.cli import main

    ami = shared_data / "diarization/ami_pyannote"
    out = tmp_path / "sample.rttm"
    args = ["diarize", str(ami / "sample.wav"), "--rttm", str(out)]
    result = CliRunner().invoke(main, [*args, "--reference", str(ami / "sample.rttm"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scoring"] == "collar 0.0 s, overlapped speech scored"
    assert set(report["metrics"]) >= {"der", "false_alarm", "missed", "confusion"}
    m = report["metrics"]
    assert m["der"] == pytest.approx(m["false_alarm"] + m["missed"] + m["confusion"], abs=1e-3)
    assert [s["id"] for s in report["speakers"]] == ["spk0", "spk1"]
    hyp = read_rttm(out)["sample"]
    assert der(read_rttm(ami / "sample.rttm")["sample"], hyp, 30.0)["der"] == pytest.approx(
        m["der"], abs=1e-3
    )
    # human-readable form states the scoring
    text = CliRunner().invoke(main, [*args, "--reference", str(ami / "sample.rttm")])
    assert text.exit_code == 0 and "overlapped speech scored" in text.output


def test_diarize_command_refuses_stereo(tmp_path):
    from click.testing import CliRunner

    from callsense.cli import main

    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.zeros((16000, 2), np.float32), SR)
    result = CliRunner().invoke(main, ["diarize", str(path)])
    assert result.exit_code != 0
    assert "stereo calls keep one speaker per channel" in result.output


def test_mono_router_gives_each_speaker_a_gap_free_stream_of_their_own_speech(models, shared_data):
    from callsense.processors.diarization.route import MonoSpeakerRouter

    a = _clips(shared_data, "ravdess_01", 4)
    b = _clips(shared_data, "ravdess_02", 4)
    audio, _ = _build_call([a[0:2], b[0:2], a[2:4], b[2:4]], ["A", "B", "A", "B"])
    router = MonoSpeakerRouter(models, DiarizerConfig())
    streams: dict[str, list] = {}
    for i, s in enumerate(range(0, len(audio), 4000)):
        for c in router.push(audio[s : s + 4000], s):
            streams.setdefault(c.speaker_id, []).append(c)
        if i == 20:
            state = pickle.loads(pickle.dumps(router.to_state()))
            router = MonoSpeakerRouter.from_state(models, state)
    for c in router.flush():
        streams.setdefault(c.speaker_id, []).append(c)
    assert sorted(streams) == ["spk0", "spk1"]
    full = {}
    for spk, chunks in streams.items():
        # contiguous in call time from the speaker's first appearance to the end of the call
        for prev, nxt in zip(chunks, chunks[1:], strict=False):
            assert nxt.start_sample == prev.start_sample + len(prev.samples)
        assert chunks[-1].start_sample + len(chunks[-1].samples) == len(audio)
        x = np.zeros(len(audio), np.float32)
        x[chunks[0].start_sample :] = np.concatenate([c.samples for c in chunks])
        full[spk] = x
    both = (full["spk0"] != 0) & (full["spk1"] != 0)
    assert not both.any()  # one voice per stream
    for x in full.values():
        nz = x != 0
        np.testing.assert_allclose(x[nz], audio[nz], atol=1 / 32768)
        assert nz.sum() > 2 * SR  # each speaker keeps seconds of speech
