"""Mono calls go through the diarizer before windowing; stereo calls keep channel = speaker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support.streaming import ravdess_clips  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def call_turns(shared_data: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Agent (neutral/calm, actor 5) and angry customer (actor 2) turns, agent first."""
    agent = ravdess_clips(shared_data, "ravdess_05", ("neutral", "calm"), 8)
    cust = ravdess_clips(shared_data, "ravdess_02", ("angry",), 8)
    a = [np.concatenate(agent[i : i + 2]) for i in range(0, 8, 2)]
    c = [np.concatenate(cust[i : i + 2]) for i in range(0, 8, 2)]
    return a, c


@pytest.fixture(scope="module")
def settings():
    from callsense.settings import Settings

    # diarization on is the default; agent emotion is an opt-in, here to compare both voices
    s = Settings(diarization_mono=True, emotion_roles=("customer", "agent"))
    if not (s.model_dir / "model.json").is_file():
        pytest.fail(f"no emotion model artefact at {s.model_dir}")
    return s


def test_mono_two_speaker_call_yields_two_speakers(call_turns, settings, tmp_path) -> None:
    from callsense.processors.offline import analyze_path

    agent, cust = call_turns
    parts: list[np.ndarray] = []
    for a, c in zip(agent, cust, strict=True):
        parts += [a, np.zeros(SR // 2, np.float32), c, np.zeros(SR // 2, np.float32)]
    mono = np.concatenate(parts)
    path = tmp_path / "mono.wav"
    sf.write(path, mono, SR)
    analysis = analyze_path(path, settings)
    assert analysis.channels == 1
    speakers = [(s["speaker"], s["role"]) for s in analysis.speakers]
    assert speakers == [("spk0", "agent"), ("spk1", "customer")]
    by = {spk: [r for r in analysis.results if r.speaker == spk] for spk, _ in speakers}
    assert all(len(v) >= 2 for v in by.values()), {k: len(v) for k, v in by.items()}
    # each trajectory is one voice: the angry customer's windows are angrier than the agent's
    angry = {k: np.mean([r.probabilities["angry"] for r in v]) for k, v in by.items()}
    assert angry["spk1"] > angry["spk0"] + 0.2, angry


def test_stereo_call_is_not_diarized(call_turns, settings, tmp_path) -> None:
    from callsense.processors.stages import StageConfig
    from support.stages import extract_windows

    agent, cust = call_turns
    ch0: list[np.ndarray] = []
    ch1: list[np.ndarray] = []
    for a, c in zip(agent[:2], cust[:2], strict=True):
        ch0 += [a, np.zeros_like(c)]
        ch1 += [np.zeros_like(a), c]
    stereo = np.stack([np.concatenate(ch0), np.concatenate(ch1)])
    _, info = extract_windows(stereo, SR, StageConfig.from_settings(settings), agent_channel=0)
    assert [(s["speaker"], s["role"], s["channel"]) for s in info] == [
        ("ch0", "agent", 0),
        ("ch1", "customer", 1),
    ]
