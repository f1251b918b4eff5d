"""The audio stages of callsense as plain, deterministic functions and classes on numpy arrays.

Both the Faust agents (``callsense.processors.app``) and offline analysis
(``callsense.processors.offline``) call exactly this code, so a call streamed through Kafka and the
same file run through ``callsense analyze`` give the same windows.

Per speaker (a stereo channel, or the whole mono signal) a :class:`SpeakerPipeline` runs::

    chunk (any rate) -> int16 -> resample to 16 kHz -> [noise reduction] -> VAD (30 ms frames,
    hangover) -> speech-only buffer -> windows of ``window_s`` of speech every ``hop_s`` of speech

Design rules:

* **Deterministic and chunking-independent.** Every stateful step works on fixed blocks whose
  positions are fixed in the stream (not by how the audio was chunked), with explicit left
  context / right look-ahead taken from the stream itself. The same samples give the same
  windows, bit for bit, whether they arrive as 250 ms chunks, 40 ms chunks or one array.
* **Serialisable state.** Everything the pipeline keeps between chunks is int16 audio plus a few
  integers, so :meth:`SpeakerPipeline.to_state` is JSON-safe (audio as base64 PCM16) and a
  pipeline restored with :meth:`SpeakerPipeline.from_state` mid-stream yields identical windows.
  (soxr's streaming resampler and webrtcvad's adaptive model keep opaque C state, so they are
  re-created per block with context instead of being kept alive.)
* **Call times.** ``Window.start_ms`` / ``end_ms`` are call times (ms since call start) of the
  window's first and last sample, even though the window itself holds only speech.
* Level normalisation belongs to the model (``callsense.models.audio.normalize_level``), not here.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from callsense.settings import Settings

STATE_VERSION = 1
VAD_RATES = (8000, 16000, 32000, 48000)


class StageError(ValueError):
    """Input a stage cannot process; the message says what was wrong (goes to dead-letter)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class StageConfig:
    sample_rate: int = 16000
    window_s: float = 3.0
    hop_s: float = 1.0
    vad_aggressiveness: int = 2
    noise_reduction: bool = False
    chunk_ms: int = 250
    vad_frame_ms: int = 30
    vad_hangover_ms: int = 150  # keep this much audio after the last speech frame
    vad_block_frames: int = 16  # VAD decisions are made per block of frames ...
    vad_warmup_frames: int = 32  # ... by a fresh VAD primed on this many preceding frames
    min_window_s: float = 1.0  # a speaker with less speech than this gets no window
    min_tail_s: float = 0.5  # at flush, speech not yet covered by a window gets a last window
    nr_block_s: float = 1.0  # noise reduction block and context on each side
    nr_context_s: float = 0.5
    max_gap_s: float = 3600.0  # a larger jump in start_sample is rejected
    uncertain_threshold: float = 0.45
    smoothing_alpha: float = 0.5
    inference_batch: int = 16
    # roles whose windows are emitted for emotion inference; the others only get VAD (talk time)
    emotion_roles: tuple[str, ...] = ("customer",)

    def __post_init__(self) -> None:
        if self.sample_rate not in VAD_RATES:
            raise ValueError(f"sample_rate must be one of {VAD_RATES} (webrtcvad)")
        if self.vad_frame_ms not in (10, 20, 30):
            raise ValueError("vad_frame_ms must be 10, 20 or 30")
        if not 0 <= self.vad_aggressiveness <= 3:
            raise ValueError("vad_aggressiveness must be 0..3")
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError("window_s and hop_s must be positive")

    @classmethod
    def from_settings(cls, settings: Settings) -> StageConfig:
        return cls(
            sample_rate=int(settings.sample_rate),
            window_s=float(settings.window_s),
            hop_s=float(settings.hop_s),
            vad_aggressiveness=int(settings.vad_aggressiveness),
            noise_reduction=bool(settings.noise_reduction),
            chunk_ms=int(settings.chunk_ms),
            uncertain_threshold=float(settings.uncertain_threshold),
            smoothing_alpha=float(settings.smoothing_alpha),
            inference_batch=int(settings.inference_batch),
            emotion_roles=tuple(settings.emotion_roles),
        )

    def roles_notice(self) -> str | None:
        """The notice to log when employees' emotion may be inferred (None: customers only)."""
        risky = [r for r in self.emotion_roles if r in ("agent", "unknown")]
        if not risky:
            return None
        return (
            f"emotion inference enabled for role(s) {', '.join(risky)} (CALLSENSE_EMOTION_ROLES="
            f"{','.join(self.emotion_roles)}): inferring employees' emotions at work is "
            "prohibited by the EU AI Act, Art. 5(1)(f), save for medical or safety reasons; "
            "make sure this use is lawful where you run it"
        )

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * self.vad_frame_ms // 1000

    def fingerprint(self) -> dict[str, Any]:
        """The fields a saved pipeline state depends on (checked by ``from_state``)."""
        return {
            "sample_rate": self.sample_rate,
            "window_samples": self.window_samples,
            "hop_samples": self.hop_samples,
            "vad_aggressiveness": self.vad_aggressiveness,
            "noise_reduction": self.noise_reduction,
            "vad_frame_ms": self.vad_frame_ms,
            "vad_hangover_ms": self.vad_hangover_ms,
            "vad_block_frames": self.vad_block_frames,
            "vad_warmup_frames": self.vad_warmup_frames,
            "nr_block_s": self.nr_block_s,
            "nr_context_s": self.nr_context_s,
        }


# --------------------------------------------------------------------------- chunking, speakers


def chunk_audio(audio: np.ndarray, sr: int, chunk_ms: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Split ``(C, T)`` audio into consecutive chunks of ``chunk_ms`` (the last may be shorter).

    Yields ``(seq, start_sample, chunk)`` with ``chunk`` of shape ``(C, t)``; ``start_sample`` is
    in samples at ``sr``. This is the one chunker used by ingest and by offline analysis.
    """
    audio = np.asarray(audio)
    if audio.ndim != 2:
        raise StageError(f"audio must be 2-D (channels, samples), got shape {audio.shape}")
    if sr <= 0:
        raise StageError(f"invalid sample rate {sr}")
    if chunk_ms <= 0:
        raise StageError(f"invalid chunk length {chunk_ms} ms")
    step = max(1, int(round(sr * chunk_ms / 1000)))
    for seq, start in enumerate(range(0, audio.shape[1], step)):
        yield seq, start, audio[:, start : start + step]


def speakers_for(channels: int, agent_channel: int = 0) -> list[tuple[str, str, int | None]]:
    """Speakers of a call: stereo → one per channel with a role, mono → one unknown speaker."""
    if channels == 1:
        return [("spk0", "unknown", None)]
    if channels == 2:
        if agent_channel not in (0, 1):
            raise StageError(f"agent_channel must be 0 or 1, got {agent_channel}")
        return [
            (f"ch{c}", "agent" if c == agent_channel else "customer", c) for c in range(channels)
        ]
    raise StageError(f"calls must be mono or stereo, got {channels} channels")


# --------------------------------------------------------------------------- int16 helpers


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] (or int16) → int16: ``clip(rint(x * 32768))``; the pipeline's format.

    This (with :func:`from_pcm16`) is THE float↔PCM16 convention of callsense: audio that goes
    ``to_pcm16`` → Kafka → ``from_pcm16`` → ``SpeakerPipeline.push`` is bit-identical to the
    same float audio pushed directly (what ``callsense analyze`` does). Another scale (e.g.
    32767) changes samples by one LSB and can move VAD decisions, breaking stream/offline parity.
    """
    x = np.asarray(x)
    if x.dtype == np.int16:
        return x
    if x.dtype.kind in "iu":
        raise StageError(f"integer audio must be int16 PCM, got {x.dtype}")
    if x.dtype.kind != "f":
        raise StageError(f"audio samples must be numeric, got dtype {x.dtype}")
    return np.clip(np.rint(x.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def chunk_pcm16(samples: np.ndarray, not_1d: str) -> np.ndarray:
    """One channel's chunk (1-D float in [-1, 1] or int16) → int16; :class:`StageError` for
    another shape (``not_1d``, the shape appended), NaN/inf or a non-audio dtype."""
    x = np.asarray(samples)
    if x.ndim != 1:
        raise StageError(f"{not_1d}, got shape {x.shape}")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise StageError("chunk contains NaN or infinite samples")
    return to_pcm16(x)


def gap_silence(
    start_sample: int, expected: int, rate: int, max_gap_s: float, who: str
) -> list[np.ndarray]:
    """A chunk at ``start_sample`` continuing a stream that expects ``expected`` (samples at
    ``rate``): the int16 silence to feed first for a gap (lost chunks), in pieces of ≤ 1 s.
    :class:`StageError` for overlapping / replayed audio or a gap over ``max_gap_s``."""
    if start_sample < expected:
        raise StageError(
            f"{who}: chunk starts at sample {start_sample} but {expected} was expected "
            "(overlapping or replayed audio)"
        )
    gap = start_sample - expected
    if gap > max_gap_s * rate:
        raise StageError(
            f"{who}: chunk jumps {gap / rate:.1f} s ahead "
            f"(more than {max_gap_s:.0f} s of missing audio)"
        )
    return [np.zeros(min(rate, gap - s), np.int16) for s in range(0, gap, rate)]


def from_pcm16(x: np.ndarray) -> np.ndarray:
    """int16 → float32 ``x / 32768`` (exact inverse of :func:`to_pcm16` on its range)."""
    return (np.asarray(x, dtype=np.int16).astype(np.float32) / 32768.0).astype(np.float32)


def _b64(x: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(x, dtype="<i2").tobytes()).decode("ascii")


def _unb64(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<i2").astype(np.int16)


# --------------------------------------------------------------------------- block processing


class _BlockStream:
    """Fixed-position block processing of an int16 stream with context on both sides.

    Input block ``k`` covers input samples ``[k*B, (k+1)*B)``; it is processed together with
    ``ctx`` samples before and after it (zeros before the stream start and after its end), and
    the output samples that belong to the block are kept. Blocks are fixed in the stream, so the
    output does not depend on how the input was chunked. ``ratio = (out_unit, in_unit)`` maps
    input lengths to output lengths (``B`` and ``ctx`` are multiples of ``in_unit``).
    """

    def __init__(
        self,
        fn: Callable[[np.ndarray], np.ndarray],
        block_in: int,
        ctx_in: int,
        in_unit: int = 1,
        out_unit: int = 1,
    ) -> None:
        self.fn = fn
        self.block_in, self.ctx_in = block_in, ctx_in
        self.in_unit, self.out_unit = in_unit, out_unit
        self.block_out = block_in * out_unit // in_unit
        self.ctx_out = ctx_in * out_unit // in_unit
        self.hist = np.zeros(ctx_in, np.int16)
        self.pending = np.zeros(0, np.int16)
        self.n_in = 0
        self.n_out = 0

    def _run_block(self, look: np.ndarray) -> np.ndarray:
        seg = np.concatenate([self.hist, look])
        y = self.fn(seg)
        out = y[self.ctx_out : self.ctx_out + self.block_out]
        self.hist = np.concatenate([self.hist, look[: self.block_in]])[-self.ctx_in :]
        if self.ctx_in == 0:
            self.hist = np.zeros(0, np.int16)
        return out

    def push(self, x: np.ndarray) -> np.ndarray:
        self.pending = np.concatenate([self.pending, x])
        self.n_in += len(x)
        outs = []
        need = self.block_in + self.ctx_in
        while len(self.pending) >= need:
            outs.append(self._run_block(self.pending[:need]))
            self.pending = self.pending[self.block_in :]
        return self._emit(outs)

    def flush(self) -> np.ndarray:
        total = self.n_in * self.out_unit // self.in_unit
        outs = []
        need = self.block_in + self.ctx_in
        while self.n_out + sum(len(o) for o in outs) < total:
            look = np.zeros(need, np.int16)
            k = min(need, len(self.pending))
            look[:k] = self.pending[:k]
            out = self._run_block(look)
            self.pending = self.pending[min(self.block_in, len(self.pending)) :]
            left = total - self.n_out - sum(len(o) for o in outs)
            outs.append(out[:left])
        self.pending = np.zeros(0, np.int16)
        return self._emit(outs)

    def _emit(self, outs: list[np.ndarray]) -> np.ndarray:
        out = np.concatenate(outs) if outs else np.zeros(0, np.int16)
        self.n_out += len(out)
        return out

    def state(self) -> dict[str, Any]:
        return {
            "hist": _b64(self.hist),
            "pending": _b64(self.pending),
            "n_in": self.n_in,
            "n_out": self.n_out,
        }

    def load(self, d: Mapping[str, Any]) -> None:
        self.hist = _unb64(d["hist"])
        self.pending = _unb64(d["pending"])
        self.n_in = int(d["n_in"])
        self.n_out = int(d["n_out"])


def _make_resampler(in_rate: int, out_rate: int) -> _BlockStream:
    """Streaming soxr resampling in ~100 ms blocks with ≥ 20 ms of context on each side."""
    import soxr

    g = math.gcd(in_rate, out_rate)
    in_unit, out_unit = in_rate // g, out_rate // g
    block_units = max(1, math.ceil(0.1 * in_rate / in_unit))
    ctx_units = max(1, math.ceil(0.02 * in_rate / in_unit))

    def fn(seg: np.ndarray) -> np.ndarray:
        y = soxr.resample(seg.astype(np.float32) / 32768.0, in_rate, out_rate, quality="HQ")
        return to_pcm16(y)

    return _BlockStream(fn, block_units * in_unit, ctx_units * in_unit, in_unit, out_unit)


def _make_denoiser(sr: int, block_s: float, ctx_s: float) -> _BlockStream:
    """noisereduce (spectral gating) per fixed block with context on both sides."""

    def fn(seg: np.ndarray) -> np.ndarray:
        import noisereduce as nr

        x = seg.astype(np.float32) / 32768.0
        if not np.any(seg):
            return seg
        y = nr.reduce_noise(y=x, sr=sr, stationary=False, n_jobs=1)
        return to_pcm16(np.asarray(y, dtype=np.float32))

    return _BlockStream(fn, int(round(block_s * sr)), int(round(ctx_s * sr)))


class _Vad:
    """webrtcvad over fixed 30 ms frames, with hangover.

    webrtcvad adapts its noise model as it goes (opaque C state). To stay deterministic and
    serialisable, decisions are made per block of ``block`` frames by a fresh VAD primed on the
    ``warmup`` frames that precede the block in the stream.
    """

    def __init__(self, cfg: StageConfig) -> None:
        self.cfg = cfg
        self.frame = cfg.frame_samples
        self.hangover = int(math.ceil(cfg.vad_hangover_ms / cfg.vad_frame_ms))
        self.hist = np.zeros(0, np.int16)  # warm-up frames (whole frames only)
        self.pending = np.zeros(0, np.int16)
        self.frames_done = 0  # index of the next frame to decide
        self.since_speech = 1 << 30  # frames since the last speech frame
        self.speech_frames = 0  # frames kept (speech + hangover)
        self.segments: list[list[int]] = []  # runs of kept frames: [first, end) frame indices

    def _decide(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        import webrtcvad

        vad = webrtcvad.Vad(self.cfg.vad_aggressiveness)
        sr, f = self.cfg.sample_rate, self.frame
        for i in range(len(self.hist) // f):
            vad.is_speech(self.hist[i * f : (i + 1) * f].tobytes(), sr)
        kept = []
        for i in range(len(block) // f):
            frame = block[i * f : (i + 1) * f]
            if vad.is_speech(frame.tobytes(), sr):
                self.since_speech = 0
            else:
                self.since_speech += 1
            if self.since_speech <= self.hangover:
                k = self.frames_done + i
                kept.append((k, frame))
                if self.segments and self.segments[-1][1] == k:
                    self.segments[-1][1] = k + 1
                else:
                    self.segments.append([k, k + 1])
        n = len(block) // f
        self.frames_done += n
        self.speech_frames += len(kept)
        warm = self.cfg.vad_warmup_frames * f
        self.hist = np.concatenate([self.hist, block[: n * f]])[-warm:] if warm else self.hist[:0]
        return kept

    def push(self, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
        self.pending = np.concatenate([self.pending, x])
        size = self.cfg.vad_block_frames * self.frame
        kept: list[tuple[int, np.ndarray]] = []
        while len(self.pending) >= size:
            kept += self._decide(self.pending[:size])
            self.pending = self.pending[size:]
        return kept

    def flush(self) -> list[tuple[int, np.ndarray]]:
        """Decide the remaining whole frames; a trailing partial frame (< 30 ms) is dropped."""
        n = len(self.pending) // self.frame
        kept = self._decide(self.pending[: n * self.frame]) if n else []
        self.pending = np.zeros(0, np.int16)
        return kept

    def state(self) -> dict[str, Any]:
        return {
            "hist": _b64(self.hist),
            "pending": _b64(self.pending),
            "frames_done": self.frames_done,
            "since_speech": self.since_speech,
            "speech_frames": self.speech_frames,
            "segments": [v for seg in self.segments for v in seg],
        }

    def load(self, d: Mapping[str, Any]) -> None:
        self.hist = _unb64(d["hist"])
        self.pending = _unb64(d["pending"])
        self.frames_done = int(d["frames_done"])
        self.since_speech = int(d["since_speech"])
        self.speech_frames = int(d["speech_frames"])
        flat = [int(v) for v in d.get("segments", [])]  # absent in states written before it
        self.segments = [flat[i : i + 2] for i in range(0, len(flat), 2)]


# --------------------------------------------------------------------------- windows


@dataclass
class Window:
    """``window_s`` of one speaker's speech (16 kHz float32) and its call-time span."""

    speaker: str
    role: str
    start_ms: int
    end_ms: int
    samples: np.ndarray = field(repr=False)
    index: int = 0  # n-th window of this speaker
    speech_start_s: float = 0.0  # position in the speaker's speech-only stream
    sample_rate: int = 16000  # rate of ``samples`` (StageConfig.sample_rate)

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


class SpeakerPipeline:
    """Per (call, speaker): resample → [denoise] → VAD → speech windows. See module doc."""

    def __init__(
        self,
        cfg: StageConfig,
        input_rate: int,
        speaker: str = "spk0",
        role: str = "unknown",
    ) -> None:
        if not isinstance(input_rate, int | np.integer) or not 0 < int(input_rate) <= 384_000:
            raise StageError(f"invalid input sample rate {input_rate!r}")
        self.cfg = cfg
        self.input_rate = int(input_rate)
        self.speaker = speaker
        self.role = role
        self._resampler = (
            _make_resampler(self.input_rate, cfg.sample_rate)
            if self.input_rate != cfg.sample_rate
            else None
        )
        self._denoiser = (
            _make_denoiser(cfg.sample_rate, cfg.nr_block_s, cfg.nr_context_s)
            if cfg.noise_reduction
            else None
        )
        self._vad = _Vad(cfg)
        self.origin: int | None = None  # input sample (call time) of this stream's first sample
        self.next_sample: int | None = None  # expected start_sample of the next chunk
        self._speech = np.zeros(0, np.int16)  # speech samples from speech index _offset
        self._frame_starts: list[int] = []  # 16 kHz stream index of each frame in _speech
        self._offset = 0  # speech samples dropped from the front of _speech
        self._total = 0  # speech samples seen
        self._n_windows = 0
        self.flushed = False

    # -- public API --------------------------------------------------------------------------

    @property
    def talk_time_s(self) -> float:
        """Seconds of audio the VAD kept (speech plus hangover) so far."""
        return self._vad.speech_frames * self.cfg.vad_frame_ms / 1000.0

    def speech_segments_ms(self) -> list[tuple[int, int]]:
        """Call-time spans (ms) in which the VAD kept this speaker's audio, in order."""
        if self.origin is None:
            return []
        f = self.cfg.frame_samples
        return [(self._call_ms(a * f), self._call_ms(b * f)) for a, b in self._vad.segments]

    @property
    def windows_emitted(self) -> int:
        return self._n_windows

    @property
    def infers_emotion(self) -> bool:
        """False for a role outside ``cfg.emotion_roles``: its speech is counted (talk time) but
        not kept and never cut into windows, so no emotion is inferred for that speaker."""
        return self.role in self.cfg.emotion_roles

    def push(self, samples: np.ndarray, start_sample: int) -> list[Window]:
        """Feed one chunk (1-D float32 in [-1, 1] or int16) that starts at ``start_sample``
        (input-rate samples since call start). Returns the windows completed by this chunk.

        A chunk that starts before the expected position (overlap / replay) raises
        :class:`StageError`; a gap (lost chunk) is filled with silence so call times stay right.
        """
        if self.flushed:
            raise StageError(f"speaker {self.speaker}: chunk after the end of the stream")
        pcm = chunk_pcm16(samples, "chunk must be 1-D per speaker")
        start_sample = int(start_sample)
        if start_sample < 0:
            raise StageError(f"negative start_sample {start_sample}")
        if self.origin is None:
            self.origin = self.next_sample = start_sample
        assert self.next_sample is not None
        windows: list[Window] = []
        for silence in gap_silence(
            start_sample, self.next_sample, self.input_rate, self.cfg.max_gap_s,
            f"speaker {self.speaker}",
        ):  # fmt: skip
            windows += self._feed(silence)
        windows += self._feed(pcm)
        return windows

    def flush(self) -> list[Window]:
        """End of stream: drain every stage and emit a last window for uncovered speech."""
        if self.flushed:
            return []
        windows: list[Window] = []
        x = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.int16)
        if self._denoiser is not None:
            x = np.concatenate([self._denoiser.push(x), self._denoiser.flush()])
        windows += self._speech_in(self._vad.push(x) + self._vad.flush())
        windows += self._tail()
        self.flushed = True
        return windows

    def to_state(self) -> dict[str, Any]:
        """JSON-safe snapshot (audio as base64 PCM16); ``from_state`` continues identically."""
        return {
            "version": STATE_VERSION,
            "config": self.cfg.fingerprint(),
            "input_rate": self.input_rate,
            "speaker": self.speaker,
            "role": self.role,
            "origin": self.origin,
            "next_sample": self.next_sample,
            "resampler": self._resampler.state() if self._resampler is not None else None,
            "denoiser": self._denoiser.state() if self._denoiser is not None else None,
            "vad": self._vad.state(),
            "speech": _b64(self._speech),
            "frame_starts": list(self._frame_starts),
            "offset": self._offset,
            "total": self._total,
            "n_windows": self._n_windows,
            "flushed": self.flushed,
        }

    @classmethod
    def from_state(cls, cfg: StageConfig, d: Mapping[str, Any]) -> SpeakerPipeline:
        if d.get("version") != STATE_VERSION:
            raise StageError(f"unsupported pipeline state version {d.get('version')!r}")
        if dict(d["config"]) != cfg.fingerprint():
            raise StageError(
                "pipeline state was saved with different stage settings "
                f"({d['config']} != {cfg.fingerprint()})"
            )
        p = cls(cfg, int(d["input_rate"]), speaker=d["speaker"], role=d["role"])
        p.origin = d["origin"]
        p.next_sample = d["next_sample"]
        if p._resampler is not None:
            p._resampler.load(d["resampler"])
        if p._denoiser is not None:
            p._denoiser.load(d["denoiser"])
        p._vad.load(d["vad"])
        p._speech = _unb64(d["speech"])
        p._frame_starts = [int(v) for v in d["frame_starts"]]
        p._offset = int(d["offset"])
        p._total = int(d["total"])
        p._n_windows = int(d["n_windows"])
        p.flushed = bool(d["flushed"])
        return p

    # -- internals ---------------------------------------------------------------------------

    def _feed(self, pcm: np.ndarray) -> list[Window]:
        assert self.next_sample is not None
        self.next_sample += len(pcm)
        x = self._resampler.push(pcm) if self._resampler is not None else pcm
        if self._denoiser is not None:
            x = self._denoiser.push(x)
        return self._speech_in(self._vad.push(x))

    def _speech_in(self, frames: list[tuple[int, np.ndarray]]) -> list[Window]:
        if not self.infers_emotion:  # talk time only (VAD counts it): no speech kept, no window
            self._total += len(frames) * self.cfg.frame_samples
            return []
        if frames:
            f = self.cfg.frame_samples
            self._speech = np.concatenate([self._speech] + [fr for _, fr in frames])
            self._frame_starts += [i * f for i, _ in frames]
            self._total += len(frames) * f
        win, hop = self.cfg.window_samples, self.cfg.hop_samples
        out = []
        while self._total >= self._n_windows * hop + win:
            out.append(self._window(self._n_windows * hop, win))
            self._n_windows += 1
            self._trim(self._n_windows * hop)
        return out

    def _tail(self) -> list[Window]:
        if not self.infers_emotion:
            return []
        win, hop = self.cfg.window_samples, self.cfg.hop_samples
        covered = (self._n_windows - 1) * hop + win if self._n_windows else 0
        start = self._n_windows * hop
        length = self._total - start
        uncovered = self._total - covered
        if length <= 0 or uncovered < self.cfg.min_tail_s * self.cfg.sample_rate:
            return []
        if length < self.cfg.min_window_s * self.cfg.sample_rate:
            return []
        w = self._window(start, length)
        self._n_windows += 1
        return [w]

    def _trim(self, keep_from: int) -> None:
        f = self.cfg.frame_samples
        drop_frames = (keep_from - self._offset) // f
        if drop_frames > 0:
            self._speech = self._speech[drop_frames * f :]
            self._frame_starts = self._frame_starts[drop_frames:]
            self._offset += drop_frames * f

    def _call_ms(self, stream_index: int) -> int:
        """Call time (ms) of a sample of the internal-rate stream."""
        assert self.origin is not None
        sr = self.cfg.sample_rate
        num = (self.origin * sr + stream_index * self.input_rate) * 1000
        return int(num // (self.input_rate * sr))

    def _stream_index(self, speech_index: int) -> int:
        f = self.cfg.frame_samples
        rel = speech_index - self._offset
        return self._frame_starts[rel // f] + rel % f

    def _window(self, start: int, length: int) -> Window:
        rel = start - self._offset
        pcm = self._speech[rel : rel + length]
        return Window(
            speaker=self.speaker,
            role=self.role,
            start_ms=self._call_ms(self._stream_index(start)),
            end_ms=self._call_ms(self._stream_index(start + length - 1)),
            samples=from_pcm16(pcm),
            index=self._n_windows,
            speech_start_s=start / self.cfg.sample_rate,
            sample_rate=self.cfg.sample_rate,
        )


# --------------------------------------------------------------------------- classification


@dataclass
class WindowResult:
    speaker: str
    role: str
    start_ms: int
    end_ms: int
    label: str  # arg-max label, or "uncertain" below the confidence threshold
    raw_label: str  # arg-max label
    confidence: float
    uncertain: bool
    probabilities: dict[str, float]
    smoothed_label: str | None = None
    smoothed_probabilities: dict[str, float] | None = None

    def to_row(self, call_id: str) -> dict[str, Any]:
        """Column values of :class:`callsense.storage.schema.EmotionWindow`."""
        return {
            "call_id": call_id,
            "speaker": self.speaker,
            "role": self.role,
            "start_ms": int(self.start_ms),
            "end_ms": int(self.end_ms),
            "label": self.label,
            "raw_label": self.raw_label,
            "confidence": float(self.confidence),
            "uncertain": bool(self.uncertain),
            "probabilities": dict(self.probabilities),
            "smoothed_label": self.smoothed_label,
            "smoothed_probabilities": (
                dict(self.smoothed_probabilities) if self.smoothed_probabilities else None
            ),
        }


def classify(
    model: Any,
    windows: Sequence[Window],
    smoothers: dict[str, Any],
    threshold: float,
    alpha: float = 0.5,
    speaker_states: dict[str, Any] | None = None,
) -> list[WindowResult]:
    """One batched ``model.predict`` over ``windows`` → results with verdicts and smoothing.

    ``smoothers`` maps speaker → ``TemporalSmoother`` and is updated in window order (a missing
    speaker gets a new smoother with ``alpha``); pass windows of a speaker in time order.
    ``speaker_states`` maps speaker → the model's per-speaker normalisation state
    (``model.new_speaker_state()`` for a missing speaker), updated the same way; None classifies
    every window as its speaker's first.
    """
    if not windows:
        return []
    from callsense.models.confidence import TemporalSmoother, verdict

    rates = {w.sample_rate for w in windows}
    if len(rates) != 1:
        raise StageError(f"windows of one batch must share a sample rate, got {sorted(rates)}")
    kwargs: dict[str, Any] = {}
    if speaker_states is not None and getattr(model, "uses_speaker_state", False):
        for w in windows:
            if w.speaker not in speaker_states:
                speaker_states[w.speaker] = model.new_speaker_state()
        kwargs["speakers"] = [speaker_states[w.speaker] for w in windows]
    probs = np.asarray(
        model.predict([w.samples for w in windows], sample_rate=rates.pop(), **kwargs),
        dtype=np.float64,
    )
    labels = list(model.labels)
    if probs.shape != (len(windows), len(labels)):
        raise StageError(f"model returned shape {probs.shape} for {len(windows)} windows")
    results = []
    for w, row in zip(windows, probs, strict=True):
        raw, conf, uncertain = verdict(row, labels, threshold)
        sm = smoothers.get(w.speaker)
        if sm is None:
            sm = smoothers[w.speaker] = TemporalSmoother(labels, alpha=alpha)
        srow = np.asarray(sm.update(row), dtype=np.float64)
        results.append(
            WindowResult(
                speaker=w.speaker,
                role=w.role,
                start_ms=w.start_ms,
                end_ms=w.end_ms,
                label="uncertain" if uncertain else raw,
                raw_label=raw,
                confidence=conf,
                uncertain=uncertain,
                probabilities={lab: float(p) for lab, p in zip(labels, row, strict=True)},
                smoothed_label=labels[int(np.argmax(srow))],
                smoothed_probabilities={lab: float(p) for lab, p in zip(labels, srow, strict=True)},
            )
        )
    return results
