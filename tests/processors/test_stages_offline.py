"""``callsense analyze`` / analyze_file on a real stereo call built from RAVDESS, and bad input."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from callsense.processors.offline import analyze_cmd, load_call_audio
from callsense.processors.stages import StageConfig
from click.testing import CliRunner
from support.stages import extract_windows
from support.streaming import ravdess_clips  # noqa: E402

SR = 16000


@pytest.fixture(scope="module")
def stereo_call(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~23 s stereo call: customer (ch1) angry, agent (ch0) neutral/calm, turns alternating."""
    agent = ravdess_clips(shared_data, "ravdess_05", ("neutral", "calm"), 3)
    cust = ravdess_clips(shared_data, "ravdess_03", ("angry",), 3)
    ch0: list[np.ndarray] = []
    ch1: list[np.ndarray] = []
    for a, c in zip(agent, cust, strict=True):
        ch0 += [np.zeros_like(c), a]
        ch1 += [c, np.zeros_like(a)]
    x = np.stack([np.concatenate(ch0), np.concatenate(ch1)])
    path = tmp_path_factory.mktemp("call") / "call.flac"
    sf.write(path, x.T, SR)
    return path


def test_extract_windows_per_channel_in_stream_order(stereo_call: Path) -> None:
    audio, sr = load_call_audio(stereo_call)
    both = StageConfig(emotion_roles=("customer", "agent"))  # the agent's windows too (opt-in)
    wins, info = extract_windows(audio, sr, both, agent_channel=0)
    assert [(s["speaker"], s["role"], s["channel"]) for s in info] == [
        ("ch0", "agent", 0),
        ("ch1", "customer", 1),
    ]
    by = {s: [w for w in wins if w.speaker == s] for s in ("ch0", "ch1")}
    assert len(by["ch1"]) >= 4 and len(by["ch0"]) >= 2
    for ws in by.values():
        assert [w.start_ms for w in ws] == sorted(w.start_ms for w in ws)
    # agent speech is only in the agent's turns: its windows start after the first customer turn
    assert by["ch0"][0].start_ms > 3000
    swapped, _ = extract_windows(audio, sr, both, agent_channel=1)
    assert {w.role for w in swapped if w.speaker == "ch0"} == {"customer"}


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not a readable audio file"),
        (b"this is a text file, not audio\n" * 20, "not a readable audio file"),
    ],
    ids=["empty-file", "text-file"],
)
def test_analyze_rejects_unreadable_files(tmp_path: Path, content: bytes, message: str) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    res = CliRunner().invoke(analyze_cmd, [str(bad)])
    assert res.exit_code != 0
    assert message in res.output


def test_analyze_rejects_nan_empty_and_multichannel(tmp_path: Path) -> None:
    x = np.zeros((SR, 2), np.float32)
    x[100, 1] = np.nan
    sf.write(tmp_path / "nan.wav", x, SR, subtype="FLOAT")
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), SR)
    sf.write(tmp_path / "four.wav", np.zeros((SR, 4), np.float32), SR)
    runner = CliRunner()
    for name, message in [
        ("nan.wav", "NaN"),
        ("zero.wav", "no samples"),
        ("four.wav", "mono or stereo"),
        ("missing.wav", "no such file"),
    ]:
        res = runner.invoke(analyze_cmd, [str(tmp_path / name)])
        assert res.exit_code == 1, (name, res.output)
        assert message in res.output, (name, res.output)
    res = runner.invoke(analyze_cmd, [str(tmp_path / "nan.wav"), "--json", "--csv"])
    assert res.exit_code == 2 and "mutually exclusive" in res.output


# ------------------------------------------------------------------------ with the shipped model


@pytest.fixture(scope="module")
def shipped_model() -> Path:
    from callsense.settings import Settings

    model_dir = Settings().model_dir
    if not (model_dir / "model.json").is_file():
        pytest.fail(f"no emotion model artefact at {model_dir} (the repository ships one)")
    return model_dir


@pytest.fixture
def both_roles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Agent emotion opted in (CALLSENSE_EMOTION_ROLES=customer,agent) for one test."""
    from callsense.settings import get_settings

    monkeypatch.setenv("CALLSENSE_EMOTION_ROLES", "customer,agent")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_analyze_infers_the_customers_emotion_only_by_default(
    stereo_call: Path, shipped_model: Path
) -> None:
    res = CliRunner().invoke(analyze_cmd, [str(stereo_call), "--json"])
    assert res.exit_code == 0, res.output
    spk = {s["speaker"]: s for s in json.loads(res.output)["speakers"]}
    assert spk["ch0"]["role"] == "agent" and spk["ch0"]["windows"] == []
    assert spk["ch0"]["talk_time_s"] > 2.0 and len(spk["ch1"]["windows"]) >= 4


def test_analyze_json_labels_angry_customer(
    stereo_call: Path, shipped_model: Path, both_roles: None
) -> None:
    res = CliRunner().invoke(analyze_cmd, [str(stereo_call), "--json", "--call-id", "c1"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["call_id"] == "c1" and doc["channels"] == 2
    spk = {s["speaker"]: s for s in doc["speakers"]}
    assert spk["ch0"]["role"] == "agent" and spk["ch1"]["role"] == "customer"
    cust = spk["ch1"]["windows"]
    assert len(cust) >= 4 and len(spk["ch0"]["windows"]) >= 2
    for w in cust + spk["ch0"]["windows"]:
        assert w["end_ms"] > w["start_ms"]
        assert sum(w["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
        assert w["confidence"] == pytest.approx(max(w["probabilities"].values()))
        assert w["raw_label"] == max(w["probabilities"], key=w["probabilities"].get)
        assert w["label"] in (w["raw_label"], "uncertain")
    angry = sum(w["raw_label"] == "angry" for w in cust)
    assert angry > len(cust) / 2, [w["raw_label"] for w in cust]

    # the calm agent sounds less angry than the customer (the model is not perfect per window)
    def mean_angry(ws: list[dict]) -> float:
        return sum(w["probabilities"]["angry"] for w in ws) / len(ws)

    assert mean_angry(spk["ch0"]["windows"]) < mean_angry(cust) - 0.2
    assert doc["summary"]["speakers"]["ch1"]["windows"] == len(cust)


def test_analyze_csv_and_table_agree_with_json(stereo_call: Path, shipped_model: Path) -> None:
    runner = CliRunner()
    doc = json.loads(runner.invoke(analyze_cmd, [str(stereo_call), "--json"]).output)
    res = runner.invoke(analyze_cmd, [str(stereo_call), "--csv", "--agent-channel", "0"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.output)))
    flat = [
        (s["speaker"], w["start_ms"], w["label"]) for s in doc["speakers"] for w in s["windows"]
    ]
    assert sorted((r["speaker"], int(r["start_ms"]), r["label"]) for r in rows) == sorted(flat)
    assert rows[0]["call_id"] == "call" and "p_angry" in rows[0]
    png = stereo_call.parent / "trajectory.png"
    table = runner.invoke(analyze_cmd, [str(stereo_call), "--plot", str(png)])
    assert table.exit_code == 0 and "ch1 (customer)" in table.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "anger share" in table.output


def test_analyze_mono_ogg_at_another_rate(
    shared_data: Path, tmp_path: Path, shipped_model: Path, both_roles: None
) -> None:
    """A mono OGG/Vorbis file at 22.05 kHz of one voice: the diarizer (on by default, as in
    the stream) finds one speaker, the agent by the default 'first' rule; windows in call
    time."""
    from callsense.models.audio import resample

    x = np.concatenate(ravdess_clips(shared_data, "ravdess_03", ("angry",), 3))
    path = tmp_path / "mono.ogg"
    sf.write(path, resample(x, SR, 22050), 22050, format="OGG", subtype="VORBIS")
    res = CliRunner().invoke(analyze_cmd, [str(path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["channels"] == 1 and doc["sample_rate"] == 22050
    assert [(s["speaker"], s["role"], s["channel"]) for s in doc["speakers"]] == [
        ("spk0", "agent", None)
    ]
    wins = doc["speakers"][0]["windows"]
    assert len(wins) >= 3 and wins[-1]["end_ms"] <= doc["duration_s"] * 1000
    assert sum(w["raw_label"] == "angry" for w in wins) > len(wins) / 2
