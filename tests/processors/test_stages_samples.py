"""The shipped sample calls: metadata, size, speech per channel, reproducible from RAVDESS."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf
from callsense.ingest.samples import SAMPLES_DIR, sample_calls
from callsense.processors.offline import load_call_audio
from callsense.processors.stages import StageConfig
from click.testing import CliRunner
from support.stages import extract_windows


def test_sample_calls_metadata_and_size() -> None:
    calls = sample_calls()
    assert 3 <= len(calls) <= 4
    total = sum(Path(c["path"]).stat().st_size for c in calls)
    assert total <= 10_000_000
    assert (SAMPLES_DIR / "README.md").read_text().count("CC BY-NC-SA 4.0") >= 1
    for c in calls:
        info = sf.info(c["path"])
        assert (info.channels, info.samplerate, info.format) == (2, 16000, "FLAC")
        assert 30.0 <= info.duration <= 60.0
        assert abs(info.duration - c["duration_s"]) < 0.01
        assert c["agent_channel"] in (0, 1) and c["agent_id"] and c["customer_id"] and c["queue"]
        roles = {(t["channel"], t["role"]) for t in c["timeline"]}
        assert roles == {(c["agent_channel"], "agent"), (1 - c["agent_channel"], "customer")}
    assert {c["agent_channel"] for c in calls} == {0, 1}  # both layouts are exercised


def test_every_sample_call_gives_windows_for_both_speakers() -> None:
    for c in sample_calls():
        audio, sr = load_call_audio(c["path"])
        cfg = StageConfig(emotion_roles=("customer", "agent"))
        wins, info = extract_windows(audio, sr, cfg, c["agent_channel"])
        roles = {s["speaker"]: s["role"] for s in info}
        assert roles[f"ch{c['agent_channel']}"] == "agent"
        by_role = {r: [w for w in wins if w.role == r] for r in ("agent", "customer")}
        assert len(by_role["customer"]) >= 10 and len(by_role["agent"]) >= 4, c["call_id"]
        # by default only the customer's windows go to the model; the agent keeps talk time
        default, default_info = extract_windows(audio, sr, StageConfig(), c["agent_channel"])
        assert {w.role for w in default} == {"customer"}
        assert [w.start_ms for w in default] == [w.start_ms for w in by_role["customer"]]
        assert default_info == info
        # customer windows lie within the customer's turns (+/- VAD hangover)
        turns = [t for t in c["timeline"] if t["role"] == "customer"]
        for w in by_role["customer"]:
            assert any(t["start_s"] * 1000 - 100 <= w.start_ms <= t["end_s"] * 1000 for t in turns)


def test_samples_rebuild_identically(shared_data: Path) -> None:
    from callsense.ingest.samples.build import main

    res = CliRunner().invoke(main, ["--data", str(shared_data), "--check"])
    assert res.exit_code == 0, res.output
    assert "match a fresh build" in res.output
