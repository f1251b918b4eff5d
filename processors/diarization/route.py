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

import base64
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .streaming import GRID_S, GRID_SAMPLES, DiarizerConfig, StreamingDiarizer
from .weights import SAMPLE_RATE, DiarizationModels


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


#: the router is fed in fixed pieces at fixed positions of the 16 kHz stream (250 ms), so the
#: stream worker and offline analysis make the very same ``push`` calls whatever the chunking
#: of the input (a speaker's pipeline starts where the piece that made it known starts)
PIECE_SAMPLES = SAMPLE_RATE // 4


def pack_state(obj: Any) -> Any:
    """Numpy arrays -> ``{"nd": dtype, "shape": [...], "b64": raw bytes}`` (lossless, JSON-safe)."""
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        return {
            "nd": a.dtype.str,
            "shape": list(a.shape),
            "b64": base64.b64encode(a.tobytes()).decode("ascii"),
        }
    if isinstance(obj, dict):
        return {k: pack_state(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [pack_state(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def unpack_state(obj: Any) -> Any:
    """Inverse of :func:`pack_state`."""
    if isinstance(obj, dict):
        if set(obj) == {"nd", "shape", "b64"}:
            a = np.frombuffer(base64.b64decode(obj["b64"]), dtype=np.dtype(obj["nd"]))
            return a.reshape(obj["shape"]).copy()
        return {k: unpack_state(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack_state(v) for v in obj]
    return obj


class MonoDiarizedStream:
    """A mono call at its own rate -> 16 kHz -> :class:`MonoSpeakerRouter` -> speaker chunks.

    ``push(samples, start_sample)`` takes the call's chunks as they arrive (input rate, any
    chunking): they are converted to PCM16, resampled with the stages' fixed-block streaming
    resampler (so positions stay exact across chunks), and handed to the router in fixed
    :data:`PIECE_SAMPLES` pieces. A gap (lost chunk) becomes silence, like in the per-speaker
    pipelines; overlapping audio is refused. The state (``to_state``) is JSON-safe and restores
    exactly. The diarizer's RTTM turns are not kept here (the stream does not need them, and
    they would grow the call's checkpoint with the call's length).
    """

    def __init__(
        self,
        models: DiarizationModels,
        config: DiarizerConfig | None,
        input_rate: int,
        max_gap_s: float = 60.0,
    ) -> None:
        from callsense.processors.stages import _make_resampler

        self.models = models
        self.router = MonoSpeakerRouter(models, config)
        self.input_rate = int(input_rate)
        self.max_gap_s = float(max_gap_s)
        self.resampler = (
            _make_resampler(self.input_rate, SAMPLE_RATE)
            if self.input_rate != SAMPLE_RATE
            else None
        )
        self.next_input = 0  # input sample expected next
        self.pending = np.zeros(0, np.int16)  # 16 kHz audio not yet handed to the router
        self.fed = 0  # 16 kHz samples handed to the router

    def push(self, samples: np.ndarray, start_sample: int) -> list[SpeakerChunk]:
        from callsense.processors.stages import chunk_pcm16, gap_silence

        pcm = chunk_pcm16(samples, "mono audio expected")
        start_sample = int(start_sample)
        out: list[SpeakerChunk] = []
        for silence in gap_silence(
            start_sample, self.next_input, self.input_rate, self.max_gap_s, "mono diarizer"
        ):
            out += self._resample_feed(silence)
        self.next_input = start_sample + len(pcm)
        return out + self._resample_feed(pcm)

    def _resample_feed(self, pcm: np.ndarray) -> list[SpeakerChunk]:
        y = self.resampler.push(pcm) if self.resampler is not None else pcm
        return self._feed(y, final=False)

    def flush(self) -> list[SpeakerChunk]:
        y = self.resampler.flush() if self.resampler is not None else np.zeros(0, np.int16)
        out = self._feed(y, final=True)
        out += self.router.flush()
        self.router.diarizer.turns = []
        return out

    def _feed(self, y: np.ndarray, final: bool) -> list[SpeakerChunk]:
        self.pending = np.concatenate([self.pending, y.astype(np.int16, copy=False)])
        out: list[SpeakerChunk] = []
        while len(self.pending) >= PIECE_SAMPLES or (final and len(self.pending)):
            piece = self.pending[:PIECE_SAMPLES]
            self.pending = self.pending[len(piece) :]
            out += self.router.push(piece, self.fed)
            self.fed += len(piece)
        self.router.diarizer.turns = []  # RTTM only: not needed by the stream
        return out

    @property
    def speakers(self) -> list[tuple[str, str]]:
        return self.router.speakers

    def to_state(self) -> dict[str, Any]:
        router = self.router.to_state()
        # of the diarizer's audio, only its last buffer_s can still be read: every later
        # analysis buffer ends at or after audio_end, and frames not yet emitted start later
        # (latency_s <= buffer_s); the state keeps just that (its size bound relies on it)
        d = router["diarizer"]
        keep = self.router.diarizer.buffer_samples
        if len(d["audio"]) > keep:
            d["audio"] = d["audio"][-keep:]
        return pack_state(
            {
                "router": router,
                "input_rate": self.input_rate,
                "max_gap_s": self.max_gap_s,
                "resampler": self.resampler.state() if self.resampler is not None else None,
                "next_input": self.next_input,
                "pending": self.pending,
                "fed": self.fed,
            }
        )

    @classmethod
    def from_state(cls, models: DiarizationModels, state: dict[str, Any]) -> MonoDiarizedStream:
        d = unpack_state(state)
        self = cls.__new__(cls)
        self.models = models
        self.router = MonoSpeakerRouter.from_state(models, d["router"])
        self.input_rate = int(d["input_rate"])
        self.max_gap_s = float(d["max_gap_s"])
        self.resampler = None
        if self.input_rate != SAMPLE_RATE:
            from callsense.processors.stages import _make_resampler

            self.resampler = _make_resampler(self.input_rate, SAMPLE_RATE)
            self.resampler.load(d["resampler"])
        self.next_input = int(d["next_input"])
        self.pending = np.asarray(d["pending"], dtype=np.int16)
        self.fed = int(d["fed"])
        return self


def _b64_bytes(n_bytes: int) -> int:
    """Length of an array of ``n_bytes`` packed by :func:`pack_state` (JSON wrapper included)."""
    return 4 * -(-int(n_bytes) // 3) + 64


def state_bound_bytes(config: DiarizerConfig, input_rate: int) -> int:
    """Upper bound of ``len(json.dumps(MonoDiarizedStream.to_state()))`` in bytes.

    The diarizer's last ``buffer_s`` of PCM16 audio dominates (~0.43 MB for 10 s); its
    analysis frames and output grid are float64, the resampler keeps one block plus context.
    ``tests/processors`` checks the bound against the measured states of real calls.
    """
    from callsense.processors.stages import _make_resampler

    cfg = config
    s = cfg.max_speakers
    total = _b64_bytes(2 * int(round(cfg.buffer_s * SAMPLE_RATE)))  # audio (see to_state)
    frames = int(cfg.buffer_s / 0.016) + 8  # segmentation frames per buffer (step >= 16 ms)
    total += _b64_bytes(8 * frames * s)  # prev_glob
    grid = int((cfg.latency_s + cfg.step_s) / GRID_S) + 8  # frames not final yet
    total += _b64_bytes(8 * grid * s) + _b64_bytes(8 * grid)  # grid acc, wsum
    total += _b64_bytes(8 * 192 * s)  # clustering centres
    total += 3 * _b64_bytes(8 * s)  # active, run_start, speech_frames
    total += _b64_bytes(2 * PIECE_SAMPLES)  # 16 kHz audio not yet handed to the router
    if int(input_rate) != SAMPLE_RATE:
        r = _make_resampler(int(input_rate), SAMPLE_RATE)
        total += _b64_bytes(2 * r.ctx_in) + _b64_bytes(2 * (r.block_in + r.ctx_in))
    return total + 2048  # config, counters, keys


def route_chunks(
    chunks: list[SpeakerChunk],
    pipes: dict[str, Any],
    cfg: Any,
    on_new: Callable[[str, str], None] | None = None,
) -> list[Any]:
    """Feed diarized speaker chunks (16 kHz) to their speakers' pipelines; returns the windows.

    A speaker's :class:`~callsense.processors.stages.SpeakerPipeline` is created in ``pipes``
    when the speaker first appears, and ``on_new(speaker_id, role)`` is told (the stream worker
    adds the speaker's smoother there). Used by the stream worker and by
    :func:`diarized_windows`, so both give a speaker the same pipeline.
    """
    from callsense.processors.stages import SpeakerPipeline

    windows: list[Any] = []
    for c in chunks:
        pipe = pipes.get(c.speaker_id)
        if pipe is None:
            pipe = pipes[c.speaker_id] = SpeakerPipeline(cfg, SAMPLE_RATE, c.speaker_id, c.role)
            if on_new is not None:
                on_new(c.speaker_id, c.role)
        windows.extend(pipe.push(c.samples, c.start_sample))
    return windows


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
    :class:`~callsense.processors.stages.StageConfig`. The call goes through
    :class:`MonoDiarizedStream` in ``chunk_ms`` chunks of its own rate (exactly what the stream
    worker does with the chunks it receives), and each speaker's stream feeds its own
    :class:`~callsense.processors.stages.SpeakerPipeline` (created when the speaker first
    appears). Returns ``(windows, speaker info)``; the stage-level form used by tests (the
    product's file analysis runs the call processor).
    """
    from callsense.processors.stages import chunk_audio

    from .weights import load_models

    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.shape[0] != 1:
        raise ValueError(f"diarization is for mono calls, got {x.shape[0]} channels")
    stream = MonoDiarizedStream(
        models or load_models(), config or DiarizerConfig.from_settings(), int(sr)
    )
    pipes: dict[str, Any] = {}
    windows: list[Any] = []
    for _seq, start, chunk in chunk_audio(x, int(sr), chunk_ms):
        windows.extend(route_chunks(stream.push(chunk[0], start), pipes, cfg))
    windows.extend(route_chunks(stream.flush(), pipes, cfg))
    for pipe in pipes.values():
        windows.extend(pipe.flush())
    windows.sort(key=lambda w: (w.end_ms, w.speaker))
    info = [
        {"speaker": spk, "role": pipe.role, "channel": None, "talk_time_s": pipe.talk_time_s}
        for spk, pipe in pipes.items()
    ]
    return windows, info
