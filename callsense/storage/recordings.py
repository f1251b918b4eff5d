"""Call recordings, kept when ``CALLSENSE_RECORDING_RETENTION_DAYS`` > 0: each call's input audio
as 16-bit PCM at the call's own rate and channels, for review beside its timeline.

While the call lasts, chunks are written *by position* into ``<name>.pcm`` (a replayed chunk
rewrites the same bytes, so at-least-once delivery leaves one copy); when it ends the file
becomes ``<name>.wav``. :func:`purge` deletes recordings older than the retention."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import time
from pathlib import Path

import numpy as np

_SAFE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


def file_name(call_id: str) -> str:
    """A file name for a call id (the id itself when it is plain, else a digest of it)."""
    if _SAFE.match(call_id) and not call_id.startswith("."):
        return call_id
    return "call-" + hashlib.sha256(call_id.encode()).hexdigest()[:32]


class Recordings:
    """The recordings directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def wav(self, call_id: str) -> Path | None:
        """The finished recording of a call, if there is one."""
        path = self.dir / f"{file_name(call_id)}.wav"
        return path if path.is_file() else None

    def write(
        self, call_id: str, sample_rate: int, start_sample: int, audio: np.ndarray
    ) -> None:
        """``audio`` (channels, samples) float in [-1, 1] at ``start_sample`` of the call."""
        self.dir.mkdir(parents=True, exist_ok=True)
        name = file_name(call_id)
        pcm, meta = self.dir / f"{name}.pcm", self.dir / f"{name}.json"
        channels = int(audio.shape[0])
        if not meta.exists():
            meta.write_text(json.dumps({"call_id": call_id, "sample_rate": int(sample_rate),
                                        "channels": channels}))  # fmt: skip
        data = (np.clip(audio.T, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        with open(pcm, "r+b" if pcm.exists() else "wb") as f:
            f.seek(int(start_sample) * channels * 2)
            f.write(data)

    def finish(self, call_id: str) -> Path | None:
        """The call ended: its PCM becomes a WAV (header + the same samples)."""
        name = file_name(call_id)
        pcm, meta = self.dir / f"{name}.pcm", self.dir / f"{name}.json"
        if not pcm.exists() or not meta.exists():
            return None
        info = json.loads(meta.read_text())
        out = self.dir / f"{name}.wav"
        tmp = out.with_suffix(".wav.part")
        size = pcm.stat().st_size
        with open(tmp, "wb") as f, open(pcm, "rb") as src:
            f.write(wav_header(info["sample_rate"], info["channels"], size))
            while block := src.read(1 << 20):
                f.write(block)
        tmp.replace(out)
        pcm.unlink()
        meta.unlink()
        return out


def wav_header(sample_rate: int, channels: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit PCM WAV file."""
    block = channels * 2
    return b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVEfmt " + struct.pack(
        "<IHHIIHH", 16, 1, channels, sample_rate, sample_rate * block, block, 16
    ) + b"data" + struct.pack("<I", data_bytes)


def purge(
    directory: Path, older_than_days: float, now: float | None = None, dry_run: bool = False
) -> list[Path]:
    """Delete recordings (finished or not) last written more than ``older_than_days`` ago;
    returns what was (with ``dry_run``: would be) deleted."""
    cutoff = (now if now is not None else time.time()) - older_than_days * 86400.0
    gone = []
    for path in sorted(Path(directory).glob("*")):
        if path.suffix in (".wav", ".pcm", ".json", ".part") and path.stat().st_mtime < cutoff:
            if not dry_run:
                path.unlink()
            gone.append(path)
    return gone
