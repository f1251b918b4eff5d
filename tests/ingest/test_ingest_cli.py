"""``callsense ingest``: clear errors for unusable files, and the exact events a call becomes on
a real embedded broker (call_start, contiguous PCM16 chunks that decode to the file, call_end)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from callsense.processors.events import AUDIO_TOPIC, parse_audio_event

from callsense.broker import EmbeddedBroker

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "callsense.cli", "ingest", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT, env=env,
    )  # fmt: skip


def _env(bootstrap: str = "127.0.0.1:1") -> dict[str, str]:
    return {**os.environ, "CALLSENSE_KAFKA_BOOTSTRAP": bootstrap}


def test_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros((0, 2), np.float32), 16000)
    r = _run(str(empty), env=_env())
    assert r.returncode != 0
    assert "cannot ingest" in r.stderr and "no samples" in r.stderr


def test_non_audio_file_is_a_clear_error(tmp_path: Path) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n")
    r = _run(str(text), env=_env())
    assert r.returncode != 0
    assert "cannot ingest" in r.stderr and "not a readable audio file" in r.stderr


def test_more_than_two_channels_rejected(tmp_path: Path) -> None:
    f = tmp_path / "three.wav"
    sf.write(str(f), np.zeros((16000, 3), np.float32), 16000)
    r = _run(str(f), env=_env())
    assert r.returncode != 0 and "3 channels" in r.stderr


def test_usage_errors(tmp_path: Path) -> None:
    f = tmp_path / "a.wav"
    sf.write(str(f), np.zeros((16000, 1), np.float32), 16000)
    r = _run(str(f), str(f), "--call-id", "x", env=_env())
    assert r.returncode == 2 and "--call-id needs exactly one PATH" in r.stderr
    r = _run(str(f), "--speed", "fast", env=_env())
    assert r.returncode == 2 and "--speed" in r.stderr


def _read_all(bootstrap: str) -> list:
    from callsense.processors.events import read_records

    async def run() -> list:
        return [r async for r in read_records(bootstrap, AUDIO_TOPIC, poll_ms=400)]

    return asyncio.run(run())


def test_ingest_produces_ordered_call_events(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    audio = (0.3 * rng.uniform(-1, 1, (22050 * 2, 2))).astype(np.float32)  # 2 s, 22.05 kHz
    f = tmp_path / "call.flac"
    sf.write(str(f), audio, 22050, subtype="PCM_16")
    expected = sf.read(str(f), dtype="float32", always_2d=True)[0].T
    with EmbeddedBroker(data_dir=tmp_path / "broker") as broker:
        r = _run(str(f), "--call-id", "c-1", "--speed", "max", "--agent-channel", "1",
                 "--agent-id", "a1", "--customer-id", "u9", "--queue", "q", "--json", "--quiet",
                 env=_env(broker.bootstrap))  # fmt: skip
        assert r.returncode == 0, r.stderr
        summary = json.loads(r.stdout)
        msgs = _read_all(broker.bootstrap)
    assert summary["chunks"] == 9 and summary["sample_rate"] == 22050
    assert {m.key for m in msgs} == {b"c-1"} and len({m.partition for m in msgs}) == 1
    events = [parse_audio_event(m.value, m.key) for m in sorted(msgs, key=lambda m: m.offset)]
    start, chunks, end = events[0], events[1:-1], events[-1]
    assert start.kind == "call_start" and end.kind == "call_end"
    assert (start.sample_rate, start.channels, start.agent_channel) == (22050, 2, 1)
    assert (start.agent_id, start.customer_id, start.queue) == ("a1", "u9", "q")
    assert [c.seq for c in chunks] == list(range(9))
    assert end.last_seq == 8 and end.total_samples == expected.shape[1]
    decoded = np.concatenate([c.samples() for c in chunks], axis=1)
    starts = [c.start_sample for c in chunks]
    assert starts == [i * 5512 for i in range(9)]  # 250 ms at 22.05 kHz, 4-sample tail
    assert decoded.shape == expected.shape
    assert np.max(np.abs(decoded - expected)) <= 1.5 / 32767
