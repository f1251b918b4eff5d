"""Stream audio files to Kafka as calls: ``call_start``, PCM16 chunks, ``call_end``.

Chunks come from :func:`callsense.processors.stages.chunk_audio`, the same chunker offline
analysis uses, at the file's own sample rate (the processor resamples), keyed by call id on
``callsense.audio``. Pacing: ``speed=1`` sends each chunk when its audio would have been
spoken (real time), ``speed=N`` N times faster, ``speed=None`` ("max") as fast as the broker
takes them. Several files stream concurrently as interleaved calls.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from callsense.processors.events import (
    AUDIO_TOPIC,
    MAX_CHANNELS,
    AudioChunk,
    CallStart,
    call_events,
    ensure_topics_async,
)

if TYPE_CHECKING:
    from callsense.settings import Settings


class IngestError(ValueError):
    """A file that cannot be streamed as a call (empty, not audio, too many channels)."""


@dataclass
class CallMeta:
    call_id: str
    agent_channel: int = 0
    agent_id: str | None = None
    customer_id: str | None = None
    queue: str | None = None


@dataclass
class IngestResult:
    call_id: str
    path: str
    chunks: int
    seconds: float
    sample_rate: int
    channels: int
    wall_s: float


def new_call_id(path: str | Path) -> str:
    return f"{Path(path).stem[:80]}-{uuid.uuid4().hex[:8]}"


def load_call_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a file as (channels, T) float32; :class:`IngestError` says why it is unusable."""
    from callsense.models.audio import AudioError, load_audio

    try:
        audio, sr = load_audio(path)
    except AudioError as exc:
        raise IngestError(str(exc)) from exc
    if audio.shape[0] > MAX_CHANNELS:
        raise IngestError(
            f"{path}: {audio.shape[0]} channels; calls are mono or stereo (agent + customer)"
        )
    if not np.all(np.isfinite(audio)):
        raise IngestError(f"{path}: audio contains NaN or infinite samples")
    if audio.shape[1] < sr * 0.1:
        raise IngestError(f"{path}: only {audio.shape[1] / sr * 1000:.0f} ms of audio")
    return audio, sr


def parse_speed(value: str | float | None) -> float | None:
    """``"max"``/None → no pacing; ``"1"`` → real time; ``"N"`` → N times real time."""
    if value is None or str(value).strip().lower() == "max":
        return None
    speed = float(value)
    if speed <= 0:
        raise ValueError("speed must be > 0 or 'max'")
    return speed


async def make_producer(bootstrap: str) -> Any:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=5,
        max_request_size=1_000_000,
        request_timeout_ms=30000,
    )
    await producer.start()
    return producer


async def stream_call(
    producer: Any,
    audio: np.ndarray,
    sr: int,
    meta: CallMeta,
    *,
    chunk_ms: int,
    speed: float | None,
    source: str | None = None,
    progress: Any = None,
) -> IngestResult:
    """Send one call; returns once the broker acknowledged every event of it."""
    key = meta.call_id.encode()
    t0 = time.monotonic()
    start = CallStart(
        meta.call_id,
        int(sr),
        int(audio.shape[0]),
        meta.agent_channel,
        meta.agent_id,
        meta.customer_id,
        meta.queue,
        source,
    )
    pending = []
    chunks = 0
    for ev, end_sample in call_events(start, audio, chunk_ms):
        if isinstance(ev, AudioChunk):
            if speed is not None:  # send a chunk once its audio has been "spoken"
                delay = t0 + end_sample / sr / speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            ev.ts = time.time()
            pending.append(await producer.send(AUDIO_TOPIC, ev.encode(), key=key))
            chunks += 1
            if progress is not None:
                progress.update((end_sample - ev.start_sample) / sr)
            if len(pending) >= 64:
                await asyncio.gather(*pending)
                pending.clear()
            continue
        await asyncio.gather(*pending)  # the call end follows every chunk
        pending.clear()
        ev.ts = time.time()
        await (await producer.send(AUDIO_TOPIC, ev.encode(), key=key))
    return IngestResult(
        meta.call_id,
        source or "",
        chunks,
        audio.shape[1] / sr,
        int(sr),
        int(audio.shape[0]),
        time.monotonic() - t0,
    )


async def ingest_files(
    paths: list[str | Path],
    settings: Settings,
    metas: list[CallMeta],
    speed: float | None,
    show_progress: bool = True,
) -> list[IngestResult]:
    """Load every file first (so a bad one fails before anything is sent), then stream them
    concurrently as interleaved calls."""
    from tqdm import tqdm

    loaded = [load_call_audio(p) for p in paths]
    await ensure_topics_async(settings.kafka_bootstrap, settings)
    producer = await make_producer(settings.kafka_bootstrap)
    total = sum(a.shape[1] / sr for a, sr in loaded)
    bar = tqdm(total=total, unit="s", desc="ingest", disable=not show_progress)
    try:
        return list(
            await asyncio.gather(
                *[
                    stream_call(
                        producer,
                        audio,
                        sr,
                        meta,
                        chunk_ms=settings.chunk_ms,
                        speed=speed,
                        source=Path(path).name,
                        progress=bar,
                    )
                    for path, (audio, sr), meta in zip(paths, loaded, metas, strict=True)
                ]
            )
        )
    finally:
        bar.close()
        await producer.stop()
