"""Route a mono call through the diarizer into one contiguous 16 kHz stream per speaker.

The per-speaker stage code (:class:`callsense.processors.stages.SpeakerPipeline`) expects, for
each speaker, gap-free audio in call time. :class:`MonoSpeakerRouter` turns the diarizer's
final single-speaker segments into exactly that: for every stretch of the call that became
final, each known speaker gets the stretch with *their* speech in place and silence
elsewhere (the other speaker's turns and overlapped speech are zeroed, so the VAD drops them
and emotion windows hold one voice only). Speakers that appear later start their stream
where they first become known.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .models import SAMPLE_RATE, DiarizationModels
from .streaming import GRID_SAMPLES, DiarizerConfig, StreamingDiarizer


class SpeakerChunk(NamedTuple):
    speaker_id: str
    role: str
    samples: np.ndarray  # float32, 16 kHz
    start_sample: int  # in 16 kHz samples since call start


class MonoSpeakerRouter:
    def __init__(self, models: DiarizationModels, config: DiarizerConfig | None = None) -> None:
        self.diarizer = StreamingDiarizer(models, config)
        self.routed = 0  # 16 kHz samples of the call already routed

    @property
    def speakers(self) -> list[tuple[str, str]]:
        d = self.diarizer
        return [(d.speaker_id(i), d.role(i)) for i in range(d.num_speakers)]

    def push(self, samples: np.ndarray, start_sample: int) -> list[SpeakerChunk]:
        """Mono 16 kHz audio at ``start_sample`` -> per-speaker chunks that became final."""
        if samples.ndim != 1:
            raise ValueError(f"mono audio expected, got shape {samples.shape}")
        segments = self.diarizer.push(samples, start_sample)
        return self._route(segments, self.diarizer.emitted * GRID_SAMPLES)

    def flush(self) -> list[SpeakerChunk]:
        segments = self.diarizer.flush()
        return self._route(segments, self.diarizer.audio_end)

    def _route(self, segments: list, final_end: int) -> list[SpeakerChunk]:
        final_end = min(final_end, self.diarizer.audio_end)
        if final_end <= self.routed:
            return []
        n = final_end - self.routed
        out = []
        for spk, role in self.speakers:
            buf = np.zeros(n, dtype=np.float32)
            for seg in segments:
                if seg.speaker_id != spk:
                    continue
                a = seg.start_sample - self.routed
                b = a + len(seg.samples)
                lo, hi = max(a, 0), min(b, n)
                if hi > lo:
                    buf[lo:hi] = seg.samples[lo - a : hi - a]
            out.append(SpeakerChunk(spk, role, buf, self.routed))
        self.routed = final_end
        return out

    def to_state(self) -> dict[str, Any]:
        return {"diarizer": self.diarizer.to_state(), "routed": self.routed}

    @classmethod
    def from_state(cls, models: DiarizationModels, state: dict[str, Any]) -> MonoSpeakerRouter:
        self = cls.__new__(cls)
        self.diarizer = StreamingDiarizer.from_state(models, state["diarizer"])
        self.routed = int(state["routed"])
        return self


def route_mono(
    models: DiarizationModels, audio_16k: np.ndarray, config: DiarizerConfig | None = None
) -> dict[str, tuple[str, np.ndarray]]:
    """Whole mono call -> ``{speaker_id: (role, 16 kHz audio of the whole call)}``."""
    router = MonoSpeakerRouter(models, config)
    pieces: dict[str, list[SpeakerChunk]] = {}
    step = SAMPLE_RATE // 4
    chunks: list[SpeakerChunk] = []
    for s in range(0, len(audio_16k), step):
        chunks += router.push(audio_16k[s : s + step], s)
    chunks += router.flush()
    for c in chunks:
        pieces.setdefault(c.speaker_id, []).append(c)
    out = {}
    for spk, role in router.speakers:
        full = np.zeros(len(audio_16k), dtype=np.float32)
        for c in pieces.get(spk, []):
            full[c.start_sample : c.start_sample + len(c.samples)] = c.samples
        out[spk] = (role, full)
    return out


def diarized_windows(
    audio: np.ndarray,
    sr: int,
    cfg: Any,
    config: DiarizerConfig | None = None,
    models: DiarizationModels | None = None,
    chunk_ms: int = 250,
) -> tuple[list[Any], list[dict[str, Any]]]:
    """Emotion windows of a mono call, per diarized speaker (offline form of the stream).

    ``audio`` is mono (1-D or ``(1, T)``) at ``sr``; ``cfg`` is the stages'
    :class:`~callsense.processors.stages.StageConfig`. The call is resampled to 16 kHz,
    streamed through :class:`MonoSpeakerRouter` in ``chunk_ms`` chunks, and each speaker's
    stream feeds its own :class:`~callsense.processors.stages.SpeakerPipeline` (created when
    the speaker first appears). Returns ``(windows, speaker info)`` like
    ``callsense.processors.offline.extract_windows``.
    """
    from callsense.models.audio import resample
    from callsense.processors.stages import SpeakerPipeline

    from .models import load_models

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        if x.shape[0] != 1:
            raise ValueError(f"diarization is for mono calls, got {x.shape[0]} channels")
        x = x[0]
    x = resample(x, int(sr), SAMPLE_RATE)
    router = MonoSpeakerRouter(models or load_models(), config or DiarizerConfig.from_settings())
    pipes: dict[str, Any] = {}
    windows: list[Any] = []

    def feed(chunks: list[SpeakerChunk]) -> None:
        for c in chunks:
            if c.speaker_id not in pipes:
                pipes[c.speaker_id] = SpeakerPipeline(cfg, SAMPLE_RATE, c.speaker_id, c.role)
            windows.extend(pipes[c.speaker_id].push(c.samples, c.start_sample))

    step = max(1, SAMPLE_RATE * chunk_ms // 1000)
    for s in range(0, len(x), step):
        feed(router.push(x[s : s + step], s))
    feed(router.flush())
    for pipe in pipes.values():
        windows.extend(pipe.flush())
    windows.sort(key=lambda w: (w.end_ms, w.speaker))
    info = [
        {"speaker": spk, "role": pipe.role, "channel": None, "talk_time_s": pipe.talk_time_s}
        for spk, pipe in pipes.items()
    ]
    return windows, info
