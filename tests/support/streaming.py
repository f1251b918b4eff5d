"""Helpers for the streaming integration tests: a real broker, a real worker subprocess, a real
stereo call built from RAVDESS clips, and readers for the database and topics."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SR = 16000


def ravdess_clips(shared: Path, actor: str, emotions: tuple[str, ...], n: int) -> list[np.ndarray]:
    """The first ``n`` RAVDESS clips of ``actor`` with one of ``emotions`` (16 kHz float32)."""
    import soundfile as sf

    with open(shared / "ravdess" / "MANIFEST.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["speaker"] == actor]
    sel = [r for r in rows if r["emotion"] in emotions][:n]
    return [sf.read(shared / "ravdess" / r["path"], dtype="float32")[0] for r in sel]


def build_call(
    shared_data: Path,
    out: Path,
    *,
    left: tuple[str, str, str],
    right: tuple[str, str, str],
    clips: int = 4,
    gap_s: float = 0.3,
) -> Path:
    """A stereo 16 kHz WAV: channel 0 = ``left`` speaker, channel 1 = ``right`` speaker.

    ``left``/``right`` = (speaker id in MANIFEST.csv, emotion, intensity or ""): ``clips`` of
    that speaker's utterances with that emotion, back to back with ``gap_s`` of silence.
    """
    import soundfile as sf

    rows = list(csv.DictReader(open(shared_data / "ravdess" / "MANIFEST.csv")))

    def channel(spec: tuple[str, str, str]) -> np.ndarray:
        spk, emotion, intensity = spec
        picked = [
            r
            for r in rows
            if r["speaker"] == spk
            and r["emotion"] == emotion
            and (not intensity or r["intensity"] == intensity)
        ][:clips]
        assert len(picked) == clips, f"not enough {emotion} clips of {spk}"
        parts = []
        for r in picked:
            x, sr = sf.read(str(shared_data / "ravdess" / r["path"]), dtype="float32")
            assert sr == 16000
            parts += [x, np.zeros(int(gap_s * sr), np.float32)]
        return np.concatenate(parts)

    a, b = channel(left), channel(right)
    n = max(len(a), len(b))
    stereo = np.zeros((n, 2), np.float32)
    stereo[: len(a), 0] = a
    stereo[: len(b), 1] = b
    sf.write(str(out), stereo, 16000, subtype="PCM_16")
    return out


def base_env(bootstrap: str, database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        CALLSENSE_KAFKA_BOOTSTRAP=bootstrap,
        CALLSENSE_DATABASE_URL=database_url,
        CALLSENSE_DATA_DIR=str(data_dir),
        CALLSENSE_APP_ID=f"callsense-test-{uuid.uuid4().hex[:8]}",
        CALLSENSE_MODEL_THREADS="1",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def callsense(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "callsense.cli", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Worker:
    """``callsense worker`` as a subprocess with its log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callsense.cli", "worker"],
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, nothing is flushed or committed."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return bool(self.proc and self.proc.poll() is None)


def wait_for(pred: Callable[[], Any], timeout: float, what: str, worker: Worker | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if worker is not None and not worker.alive():
            raise AssertionError(f"worker died while waiting for {what}:\n{worker.log()[-4000:]}")
        time.sleep(0.25)
    tail = worker.log()[-4000:] if worker else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{tail}")


def db_windows(url: str, call_id: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from callsense.storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT speaker, role, start_ms, end_ms, label, raw_label, confidence, "
                    "smoothed_label, probabilities FROM emotion_windows WHERE call_id = :c "
                    "ORDER BY speaker, start_ms"
                ),
                {"c": call_id},
            ).mappings()
            out = []
            for r in rows:
                d = dict(r)
                if isinstance(d["probabilities"], str):
                    d["probabilities"] = json.loads(d["probabilities"])
                out.append(d)
            return out
    finally:
        engine.dispose()


def db_scalar(url: str, sql: str, **params: Any) -> Any:
    import sqlalchemy as sa

    from callsense.storage.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql), params).scalar()
    finally:
        engine.dispose()


def event_dict(value: bytes) -> dict[str, Any]:
    """A message value as a dict: JSON as parsed; a binary audio chunk as its header fields
    with its samples as ``pcm16``, (channels, samples) int16."""
    from dataclasses import asdict

    from callsense.processors.events import CHUNK_TAG, parse_audio_event
    from callsense.processors.stages import to_pcm16

    if not value.startswith(CHUNK_TAG):
        return json.loads(value)
    ev = parse_audio_event(value)
    d = {k: v for k, v in asdict(ev).items() if k != "data"}
    d["pcm16"] = to_pcm16(ev.samples())
    return d


def read_topic(bootstrap: str, topic: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every message of ``topic`` (all partitions, from the beginning) as a dict
    (:func:`event_dict`)."""
    from callsense.processors.events import read_records

    async def run() -> list[dict[str, Any]]:
        records = read_records(bootstrap, topic, timeout_s=timeout)
        return [event_dict(r.value) async for r in records]

    return asyncio.run(run())


def produce(bootstrap: str, messages: list[tuple[bytes | None, bytes]], topic: str) -> None:
    """Send raw (key, value) messages and wait for the broker's acks."""
    from aiokafka import AIOKafkaProducer

    async def run() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            for key, value in messages:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

    asyncio.run(run())


def mono_two_speaker_call(shared: Path, turns: int = 4) -> np.ndarray:
    """Agent (neutral/calm, actor 5) and angry customer (actor 2) take turns, agent first,
    half a second apart; 16 kHz mono float32."""
    agent = ravdess_clips(shared, "ravdess_05", ("neutral", "calm"), 2 * turns)
    cust = ravdess_clips(shared, "ravdess_02", ("angry",), 2 * turns)
    gap = np.zeros(SR // 2, np.float32)
    parts: list[np.ndarray] = []
    for i in range(0, 2 * turns, 2):
        parts += [agent[i], agent[i + 1], gap, cust[i], cust[i + 1], gap]
    return np.concatenate(parts)



def at_rate(audio: np.ndarray, sr: int) -> np.ndarray:
    if sr == SR:
        return audio
    import soxr

    return soxr.resample(audio, SR, sr, quality="HQ").astype(np.float32)



def window_key(rows: list[dict[str, Any]]) -> list[tuple]:
    return [
        (r["speaker"], r["start_ms"], r["end_ms"], r["label"], r["smoothed_label"]) for r in rows
    ]



def assert_same_windows(
    stored: list[dict[str, Any]], offline: list[dict[str, Any]], logs: list[Path] | None = None
) -> None:
    assert window_key(stored) == window_key(offline), delivery_story(logs or [])
    for s, o in zip(stored, offline, strict=True):
        for label, p in o["probabilities"].items():
            assert s["probabilities"][label] == pytest.approx(p, abs=1e-4)



def delivery_story(logs: list[Path]) -> str:
    """The workers' log lines on what was delivered and processed, for a failure message."""
    pattern = re.compile(r"audio batch|partition|never arrived|recovery|Worker ready|Rebalanc")
    lines = []
    for log in logs:
        text = log.read_text(errors="replace") if log.exists() else "(no log)"
        lines += [f"--- {log.name}"] + [ln[:240] for ln in text.splitlines() if pattern.search(ln)]
    return "\n".join(lines[-120:])



def ingest_call(
    env: dict[str, str], path: Path, call_id: str, speed: str, agent_channel: int = 0
) -> subprocess.Popen:
    """`callsense ingest` of one stereo file (the agent on ``agent_channel``) as a subprocess."""
    return subprocess.Popen(
        [sys.executable, "-m", "callsense.cli", "ingest", str(path), "--call-id", call_id,
         "--speed", speed, "--agent-channel", str(agent_channel), "--agent-id", "agent-7",
         "--customer-id", "cust-42", "--queue", "billing", "--quiet"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip



def partition_of(call_id: str, partitions: int = 4) -> int:
    """The partition the ingest producer (aiokafka's default partitioner) sends a call to."""
    from aiokafka.partitioner import murmur2

    return (murmur2(call_id.encode()) & 0x7FFFFFFF) % partitions


def audio_partitions(log: str) -> set[int] | None:
    """The ``callsense.audio`` partitions of the worker's latest assignment (from its log)."""
    from callsense.processors.events import AUDIO_TOPIC

    assigned = re.compile(r"[|│]\s*" + re.escape(AUDIO_TOPIC) + r"\s*[|│]\s*\{([^}]*)\}")
    marker = log.rfind("Setting newly assigned partitions")
    if marker < 0:
        return None
    tail = log[marker:]
    if "Worker ready" not in tail and "Recovery complete" not in tail:
        return None  # the assignment is not active yet
    m = assigned.search(tail)
    if m is None:
        return set()
    out: set[int] = set()
    for part in m.group(1).split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = part.split("-")
            out.update(range(int(lo), int(hi) + 1))
        elif part:
            out.add(int(part))
    return out
