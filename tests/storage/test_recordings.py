"""Call recordings: written by position (replays leave one copy), finished as WAV, purged."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from click.testing import CliRunner

from callsense.storage.cli import recordings_group
from callsense.storage.recordings import Recordings, file_name, purge


def _chunks(audio: np.ndarray, size: int) -> list[tuple[int, np.ndarray]]:
    return [(s, audio[:, s : s + size]) for s in range(0, audio.shape[1], size)]


def test_chunks_in_any_order_and_replayed_make_one_exact_wav(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    audio = (rng.integers(-20000, 20000, (2, 8000 * 3)) / 32767.0).astype(np.float32)
    rec = Recordings(tmp_path)
    chunks = _chunks(audio, 2000)
    for start, part in [*chunks[3:], *chunks[:3], *chunks[5:8]]:  # out of order, some twice
        rec.write("call-1", 8000, start, part)
    assert rec.wav("call-1") is None  # not finished yet
    path = rec.finish("call-1")
    assert path == rec.wav("call-1") and not list(tmp_path.glob("*.pcm"))
    data, rate = sf.read(path, dtype="int16", always_2d=True)
    assert rate == 8000 and data.shape == (8000 * 3, 2)
    assert np.array_equal(data.T, np.round(audio * 32767).astype(np.int16))


def test_unsafe_call_ids_get_plain_file_names() -> None:
    assert file_name("call-7.a_b") == "call-7.a_b"
    for bad in ("../etc/passwd", "a/b", ".hidden", "x" * 200):
        name = file_name(bad)
        assert name.startswith("call-") and "/" not in name and len(name) == 37


def test_purge_deletes_only_what_is_past_retention(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rec = Recordings(tmp_path / "recordings")
    for cid in ("old", "new"):
        rec.write(cid, 8000, 0, np.zeros((1, 800), np.float32))
        rec.finish(cid)
    old = rec.wav("old")
    stamp = time.time() - 10 * 86400
    os.utime(old, (stamp, stamp))
    assert purge(tmp_path / "recordings", 30) == []
    assert purge(tmp_path / "recordings", 7, dry_run=True) == [old] and old.exists()
    monkeypatch.setenv("CALLSENSE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CALLSENSE_RECORDING_RETENTION_DAYS", "7")
    from callsense.settings import get_settings

    get_settings.cache_clear()
    try:
        out = CliRunner().invoke(recordings_group, ["purge"])
    finally:
        get_settings.cache_clear()
    assert out.exit_code == 0, out.output
    assert "deleted old.wav" in out.output and "1 file(s) older than 7 days" in out.output
    assert rec.wav("old") is None and rec.wav("new") is not None
