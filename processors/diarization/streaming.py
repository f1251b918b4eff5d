"""Streaming speaker diarization of one mono call (the approach diart takes).

Every ``step_s`` seconds the diarizer re-analyses a rolling buffer of the last ``buffer_s``
seconds:

1. segmentation-3.0 gives per-frame activity of up to 3 *local* speakers (overlap = two
   speakers active in the same frame; speaker change = activity moving between slots);
2. each active local speaker gets a CAM++ embedding of its single-speaker speech in the buffer
   (overlapped frames are left out of the embedding);
3. :class:`OnlineClustering` maps local speakers to the call's global speakers
   (at most ``max_speakers``, default 2 for calls), with per-call state;
4. the chunk's activities, re-labelled with global speakers, are added into a frame grid of
   the call (10 ms frames) with a Hamming weight, so each frame is the weighted average of
   every buffer that saw it;
5. frames older than ``latency_s`` are final: they are binarised with hysteresis
   (``onset``/``offset``) and emitted. ``latency_s`` sets how many overlapping buffers a frame
   is averaged over before it is decided, trading delay for accuracy (1-5 s).

Output of :meth:`StreamingDiarizer.push`: speech attributed to exactly one speaker,
``SpeakerSegment(speaker_id, role, samples, start_sample)``. Frames where two speakers
overlap are *not* returned (they would mix two voices in one emotion window) but are kept in
:attr:`turns` for RTTM output and scoring. Speaker ids are ``spk0``, ``spk1``, ... in order of
first appearance and never change during the call.

Roles follow a documented, configurable rule (``agent_rule``): ``first`` - the first speaker
heard is the agent (inbound calls: the agent greets); ``second`` - the second speaker heard is
the agent (outbound calls: the callee answers first); ``none`` - every speaker is
``unknown``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .clustering import OnlineClustering
from .weights import SAMPLE_RATE, DiarizationModels

if TYPE_CHECKING:
    from callsense.settings import Settings

GRID_S = 0.01  # output frame length (s)
GRID_SAMPLES = int(round(GRID_S * SAMPLE_RATE))
AGENT_RULES = ("first", "second", "none")
#: a chunk (10 s) whose RMS is below this (-60 dBFS: digital silence, hold, comfort noise) has
#: no active speaker and is not segmented, so silence costs almost nothing; 0.2 s of quiet
#: speech (-35 dBFS) in it is enough to lift it to -52 dBFS
SILENT_RMS = 10 ** (-60 / 20)


class SpeakerSegment(NamedTuple):
    speaker_id: str
    role: str
    samples: np.ndarray
    start_sample: int


@dataclass
class DiarizerConfig:
    """Tunable parameters (defaults: see docs/diarization.md for how they were chosen)."""

    latency_s: float = 2.5
    step_s: float = 1.25
    buffer_s: float = 10.0
    max_speakers: int = 2
    tau_active: float = 0.5  # a local speaker is active in a chunk if max prob >= tau
    delta_new: float = 0.3  # cosine distance above which a new global speaker is opened
    continuity_weight: float = 0.5  # bonus for continuing the previous chunk's speaker
    min_embed_s: float = 0.3  # clean speech needed for an embedding
    min_update_s: float = 0.8  # ... to move a centroid
    min_new_s: float = 1.0  # ... to open a new speaker
    embed_max_s: float = 2.0  # most recent clean speech used per embedding (cost cap)
    focus_s: float = 5.0  # a chunk labels (and embeds) only its last focus_s; 0 = latency_s
    reuse_continuity: float = 0.7  # >0: skip the embedding of a local speaker this sure to
    # continue the previous chunk's speaker (share of its activity), 0 = always embed
    onset: float = 0.5
    offset: float = 0.4
    agent_rule: str = "first"

    def validate(self) -> None:
        if not 1.0 <= self.latency_s <= 5.0:
            raise ValueError(f"latency_s must be within 1-5 s, got {self.latency_s}")
        if not 0.1 <= self.step_s <= self.latency_s:
            raise ValueError(f"step_s must be within 0.1 s and latency_s, got {self.step_s}")
        if self.buffer_s < self.latency_s or self.buffer_s > 10.0:
            raise ValueError("buffer_s must be within latency_s and 10 s")
        if self.max_speakers < 1:
            raise ValueError("max_speakers must be >= 1")
        if self.agent_rule not in AGENT_RULES:
            raise ValueError(f"agent_rule must be one of {AGENT_RULES}, got {self.agent_rule!r}")

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> DiarizerConfig:
        if settings is None:
            from callsense.settings import get_settings

            settings = get_settings()
        return cls(
            latency_s=settings.diarization_latency_s,
            step_s=settings.diarization_step_s,
            max_speakers=settings.diarization_max_speakers,
            delta_new=settings.diarization_delta_new,
            agent_rule=settings.diarization_agent_rule,
        )


@dataclass
class _Grid:
    """Weighted sums of speaker activity on the 10 ms output grid, from frame ``offset`` on."""

    offset: int = 0
    acc: np.ndarray = field(default_factory=lambda: np.zeros((0, 1)))
    wsum: np.ndarray = field(default_factory=lambda: np.zeros(0))


class StreamingDiarizer:
    """Per-call streaming diarizer; ``push`` audio as it arrives, ``flush`` at hang-up."""

    def __init__(self, models: DiarizationModels, config: DiarizerConfig | None = None) -> None:
        self.config = config or DiarizerConfig()
        self.config.validate()
        self.models = models
        cfg = self.config
        self.step_samples = int(round(cfg.step_s * SAMPLE_RATE))
        self.buffer_samples = int(round(cfg.buffer_s * SAMPLE_RATE))
        self.latency_samples = int(round(cfg.latency_s * SAMPLE_RATE))
        focus_s = min(cfg.focus_s or cfg.latency_s, cfg.buffer_s)
        self.focus_samples = int(round(focus_s * SAMPLE_RATE))
        keep_s = max(cfg.buffer_s, cfg.latency_s + cfg.step_s) + 0.5
        self.keep_samples = int(round(keep_s * SAMPLE_RATE))
        seg = models.segmentation
        self._frame_step = seg.grid.step
        self._frame_dur = seg.grid.duration
        self._num_frames = seg.num_frames(self.buffer_samples)
        centers = seg.grid.center(np.arange(self._num_frames))
        # Hamming weights over the chunk, zero outside the focus (the chunk's newest audio):
        # a frame is labelled by the chunks that embedded the speech around it
        in_focus = centers >= cfg.buffer_s - focus_s
        self._weights = np.hamming(self._num_frames) * in_focus
        # chunk sample -> chunk frame index (used to cut each local speaker's audio)
        sample_t = (np.arange(self.buffer_samples) + 0.5) / SAMPLE_RATE
        idx = np.searchsorted(centers, sample_t)
        idx = np.clip(idx, 1, self._num_frames - 1)
        left_closer = (sample_t - centers[idx - 1]) < (centers[idx] - sample_t)
        self._sample_frame = np.where(left_closer, idx - 1, idx)
        self._chunk_centers = centers
        self.reset()

    # -- per-call state ---------------------------------------------------------------------
    def reset(self) -> None:
        cfg = self.config
        self.clustering = OnlineClustering(
            cfg.max_speakers, cfg.delta_new, self.models.embedding.dim, cfg.continuity_weight
        )
        self.prev_start = 0  # start sample of the previous chunk
        self.prev_glob = np.zeros((0, cfg.max_speakers))  # its activities, global labels
        self.audio = np.zeros(0, dtype=np.int16)  # last keep_samples of the call (PCM16)
        self.audio_end = 0  # absolute sample index just after the last received sample
        self.next_step = self.step_samples  # buffer end of the next analysis step
        self.emitted = 0  # first grid frame not yet final
        self.grid = _Grid(acc=np.zeros((0, cfg.max_speakers)))
        self.active = np.zeros(cfg.max_speakers, dtype=bool)  # hysteresis state
        self.run_start = np.full(cfg.max_speakers, -1, dtype=np.int64)  # open turn (frame)
        self.turns: list[tuple[str, float, float]] = []  # (speaker, start s, end s), overlap kept
        self.speech_frames = np.zeros(cfg.max_speakers, dtype=np.int64)

    def to_state(self) -> dict[str, Any]:
        """Everything needed to resume this call elsewhere (plain numpy / python values)."""
        return {
            "config": asdict(self.config),
            "clustering": self.clustering.to_state(),
            "audio": self.audio.copy(),
            "audio_end": self.audio_end,
            "next_step": self.next_step,
            "emitted": self.emitted,
            "grid": {
                "offset": self.grid.offset,
                "acc": self.grid.acc.copy(),
                "wsum": self.grid.wsum.copy(),
            },
            "active": self.active.copy(),
            "run_start": self.run_start.copy(),
            "turns": list(self.turns),
            "speech_frames": self.speech_frames.copy(),
            "prev_start": self.prev_start,
            "prev_glob": self.prev_glob.copy(),
        }

    @classmethod
    def from_state(cls, models: DiarizationModels, state: dict[str, Any]) -> StreamingDiarizer:
        self = cls(models, DiarizerConfig(**state["config"]))
        self.clustering.load_state(state["clustering"])
        self.audio = np.asarray(state["audio"], dtype=np.int16)
        self.audio_end = int(state["audio_end"])
        self.next_step = int(state["next_step"])
        self.emitted = int(state["emitted"])
        g = state["grid"]
        self.grid = _Grid(int(g["offset"]), np.asarray(g["acc"]), np.asarray(g["wsum"]))
        self.active = np.asarray(state["active"], dtype=bool)
        self.run_start = np.asarray(state["run_start"], dtype=np.int64)
        self.turns = [tuple(t) for t in state["turns"]]  # type: ignore[misc]
        self.speech_frames = np.asarray(state["speech_frames"], dtype=np.int64)
        self.prev_start = int(state["prev_start"])
        self.prev_glob = np.asarray(state["prev_glob"], dtype=np.float64)
        return self

    # -- labels -----------------------------------------------------------------------------
    @staticmethod
    def speaker_id(index: int) -> str:
        return f"spk{index}"

    def role(self, index: int) -> str:
        rule = self.config.agent_rule
        if rule == "none":
            return "unknown"
        agent = 0 if rule == "first" else 1
        return "agent" if index == agent else "customer"

    @property
    def num_speakers(self) -> int:
        return self.clustering.count

    # -- streaming --------------------------------------------------------------------------
    def push(self, samples: np.ndarray, start_sample: int | None = None) -> list[SpeakerSegment]:
        """Add mono 16 kHz audio (float in [-1, 1] or PCM16) at ``start_sample`` of the call.

        Audio already received (a redelivered chunk) is ignored; a gap is filled with silence.
        Returns the speech that became final, attributed to single speakers.
        """
        samples = np.asarray(samples)
        if samples.ndim != 1:
            raise ValueError(f"mono audio expected, got shape {samples.shape}")
        if samples.dtype != np.int16:
            if not np.all(np.isfinite(samples)):
                raise ValueError("audio contains NaN or infinite values")
            # kept as PCM16 (what the audio topic carries): half the state of float32
            samples = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype(np.int16)
        if start_sample is None:
            start_sample = self.audio_end
        if start_sample < 0:
            raise ValueError("start_sample must be >= 0")
        if start_sample + len(samples) <= self.audio_end:
            return []  # duplicate delivery
        if start_sample < self.audio_end:
            samples = samples[self.audio_end - start_sample :]
        elif start_sample > self.audio_end:
            samples = np.concatenate(
                [np.zeros(start_sample - self.audio_end, dtype=np.int16), samples]
            )
        self.audio = np.concatenate([self.audio, samples])[-self.keep_samples :]
        self.audio_end += len(samples)
        out: list[SpeakerSegment] = []
        while self.next_step <= self.audio_end:
            self._analyse(self.next_step)
            # frames up to (step end - latency + step) are final: none waits > latency_s
            out += self._emit_until(self.next_step - self.latency_samples + self.step_samples)
            self.next_step += self.step_samples
        return out

    def flush(self) -> list[SpeakerSegment]:
        """End of call: analyse the tail and make every remaining frame final."""
        last_step = self.next_step - self.step_samples
        if self.audio_end > last_step:
            self._analyse(self.audio_end)
        out = self._emit_until(self.audio_end)
        for s in range(self.config.max_speakers):
            self._close_run(s, self._frames(self.audio_end))
        return out

    # -- internals --------------------------------------------------------------------------
    @staticmethod
    def _frames(sample: int) -> int:
        return sample // GRID_SAMPLES

    def _chunk(self, end: int) -> np.ndarray:
        """Audio [end - buffer, end), zero-padded before the call start."""
        start = end - self.buffer_samples
        have_start = self.audio_end - len(self.audio)
        chunk = np.zeros(self.buffer_samples, dtype=np.float32)
        lo = max(start, have_start)
        hi = min(end, self.audio_end)
        if hi > lo:
            chunk[lo - start : hi - start] = self.audio[lo - have_start : hi - have_start] / 32768.0
        return chunk

    def _analyse(self, end: int) -> None:
        cfg = self.config
        chunk = self._chunk(end)
        start = end - self.buffer_samples
        if np.sqrt(np.mean(np.square(chunk))) < SILENT_RMS:
            probs = np.zeros((self._num_frames, 3))
        else:
            probs = self.models.segmentation(chunk)[: self._num_frames]  # (F, 3)
        valid_frames = (start / SAMPLE_RATE + self._chunk_centers) >= 0.0
        probs = probs * valid_frames[:, None]
        # local speakers active where this chunk labels frames (its focus)
        active = (probs * (self._weights > 0)[:, None]).max(axis=0) >= cfg.tau_active
        glob = np.zeros((self._num_frames, cfg.max_speakers))
        local = [k for k in np.flatnonzero(active)]
        if local:
            binary = probs >= 0.5
            alone = binary & (binary.sum(axis=1, keepdims=True) == 1)
            positions = np.arange(self.buffer_samples)
            valid_samples = positions + start >= 0
            focus = valid_samples & (positions >= self.buffer_samples - self.focus_samples)
            clips, clean_s, keep = [], [], []
            need = cfg.min_embed_s * SAMPLE_RATE
            if cfg.reuse_continuity > 0 and self.clustering.count:
                # a local speaker that clearly continues one global speaker of the previous
                # chunk keeps that label without a new embedding (saves most CAM++ calls)
                cont_all = self._continuity(start, probs[:, local])
                best = cont_all.argmax(axis=1)
                top = cont_all.max(axis=1)
                second = np.sort(cont_all, axis=1)[:, -2] if cont_all.shape[1] > 1 else 0 * top
                sure = (top >= cfg.reuse_continuity) & (second <= 0.1)
                if len(set(best[sure].tolist())) == int(sure.sum()):  # one-to-one
                    for i in np.flatnonzero(sure):
                        g = int(best[i])
                        glob[:, g] = np.maximum(glob[:, g], probs[:, local[i]])
                    local = [k for i, k in enumerate(local) if not sure[i]]
            for k in local:
                # single-speaker speech of k in the focus, else in the whole chunk, else
                # any speech of k (overlap included)
                for region, frames in (
                    (focus, alone),
                    (valid_samples, alone),
                    (valid_samples, binary),
                ):
                    mask = frames[self._sample_frame, k] & region
                    if mask.sum() >= need:
                        break
                else:
                    continue
                n_clean = int((alone[self._sample_frame, k] & mask).sum())
                clip = chunk[mask][-int(cfg.embed_max_s * SAMPLE_RATE) :]
                clips.append(clip)
                clean_s.append(n_clean / SAMPLE_RATE)
                keep.append(k)
            if clips:
                order = np.argsort(clean_s)[::-1]  # most speech first: it opens speakers first
                embs = self.models.embedding([clips[i] for i in order])
                clean = np.asarray(clean_s)[order]
                cont = self._continuity(start, probs[:, [keep[i] for i in order]])
                mapping = self.clustering.assign(
                    embs.astype(np.float64),
                    clean >= cfg.min_new_s,
                    clean >= cfg.min_update_s,
                    cont,
                )
                for j, g in enumerate(mapping):
                    if g >= 0:
                        k = keep[order[j]]
                        glob[:, g] = np.maximum(glob[:, g], probs[:, k])
        self._accumulate(start, glob, valid_frames)
        self.prev_start, self.prev_glob = start, glob

    def _continuity(self, start: int, local: np.ndarray) -> np.ndarray:
        """(K, max_speakers): share of each local speaker's activity (in this chunk) that the
        previous chunk gave to each global speaker on the audio both chunks cover."""
        out = np.zeros((local.shape[1], self.config.max_speakers))
        if not len(self.prev_glob):
            return out
        shift = (start - self.prev_start) / SAMPLE_RATE
        t = self._chunk_centers + shift  # current frames, in previous-chunk time
        idx = np.rint((t - self._frame_dur / 2) / self._frame_step).astype(int)
        inside = (idx >= 0) & (idx < len(self.prev_glob))
        if not inside.any():
            return out
        cur = local[inside]  # (n, K)
        prev = self.prev_glob[idx[inside]]  # (n, S)
        # normalised by the local speaker's activity over the *whole* chunk, so a speaker
        # who only starts in the new audio has no continuity with anybody
        mass = np.maximum(local.sum(axis=0), 0.5 / self._frame_step)
        for k in range(cur.shape[1]):
            out[k] = np.minimum(cur[:, k : k + 1], prev).sum(axis=0) / mass[k]
        return out

    def _accumulate(self, start: int, glob: np.ndarray, valid: np.ndarray) -> None:
        first = max(self._frames(max(start, 0)), self.emitted)
        last = self._frames(start + self.buffer_samples)  # exclusive
        if last <= first:
            return
        grid = self.grid
        need = last - grid.offset
        if need > len(grid.wsum):
            extra = need - len(grid.wsum)
            grid.acc = np.concatenate([grid.acc, np.zeros((extra, glob.shape[1]))])
            grid.wsum = np.concatenate([grid.wsum, np.zeros(extra)])
        t = (np.arange(first, last) + 0.5) * GRID_S - start / SAMPLE_RATE
        idx = np.clip(
            np.rint((t - self._frame_dur / 2) / self._frame_step).astype(int),
            0,
            self._num_frames - 1,
        )
        w = self._weights[idx] * valid[idx]
        sl = slice(first - grid.offset, last - grid.offset)
        grid.acc[sl] += w[:, None] * glob[idx]
        grid.wsum[sl] += w

    def _emit_until(self, end_sample: int) -> list[SpeakerSegment]:
        cfg = self.config
        stop = min(self._frames(max(end_sample, 0)), self._frames(self.audio_end))
        if stop <= self.emitted:
            return []
        grid = self.grid
        lo, hi = self.emitted - grid.offset, stop - grid.offset
        acc = np.zeros((stop - self.emitted, cfg.max_speakers))
        avail = min(hi, len(grid.wsum))
        if avail > lo:
            w = grid.wsum[lo:avail]
            acc[: avail - lo] = grid.acc[lo:avail] / np.maximum(w, 1e-9)[:, None]
        # hysteresis binarisation, frame by frame (state carried across steps)
        binary = np.zeros_like(acc, dtype=bool)
        state = self.active.copy()
        for i in range(len(acc)):
            state = np.where(state, acc[i] >= cfg.offset, acc[i] >= cfg.onset)
            binary[i] = state
        self.active = state
        # turns (overlap kept) for RTTM
        for s in range(cfg.max_speakers):
            col = binary[:, s]
            for i in range(len(col)):
                f = self.emitted + i
                if col[i] and self.run_start[s] < 0:
                    self.run_start[s] = f
                elif not col[i] and self.run_start[s] >= 0:
                    self._close_run(s, f)
            self.speech_frames[s] += int(col.sum())
        # single-speaker speech for the emotion windows (overlap excluded)
        segments: list[SpeakerSegment] = []
        single = binary.sum(axis=1) == 1
        owner = np.where(single, binary.argmax(axis=1), -1)
        i = 0
        have_start = self.audio_end - len(self.audio)
        while i < len(owner):
            j = i
            while j < len(owner) and owner[j] == owner[i]:
                j += 1
            if owner[i] >= 0:
                s0 = (self.emitted + i) * GRID_SAMPLES
                s1 = min((self.emitted + j) * GRID_SAMPLES, self.audio_end)
                a0 = max(s0, have_start)
                if s1 > a0:
                    spk = int(owner[i])
                    segments.append(
                        SpeakerSegment(
                            self.speaker_id(spk),
                            self.role(spk),
                            self.audio[a0 - have_start : s1 - have_start] / np.float32(32768.0),
                            a0,
                        )
                    )
            i = j
        self.emitted = stop
        # drop grid frames that are final
        cut = self.emitted - grid.offset
        if cut > 0:
            grid.acc = grid.acc[cut:]
            grid.wsum = grid.wsum[cut:]
            grid.offset = self.emitted
        return segments

    def _close_run(self, s: int, frame: int) -> None:
        if self.run_start[s] >= 0:
            start = self.run_start[s] * GRID_S
            end = frame * GRID_S
            if end > start:
                self.turns.append((self.speaker_id(s), round(start, 3), round(end, 3)))
            self.run_start[s] = -1


def diarize_array(
    models: DiarizationModels,
    audio: np.ndarray,
    config: DiarizerConfig | None = None,
    chunk_s: float = 0.25,
) -> tuple[StreamingDiarizer, list[SpeakerSegment]]:
    """Stream a whole mono 16 kHz array through a fresh diarizer in ``chunk_s`` pieces."""
    diarizer = StreamingDiarizer(models, config)
    chunk = max(1, int(round(chunk_s * SAMPLE_RATE)))
    segments: list[SpeakerSegment] = []
    for start in range(0, len(audio), chunk):
        segments += diarizer.push(audio[start : start + chunk], start)
    segments += diarizer.flush()
    return diarizer, segments
