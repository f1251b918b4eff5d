"""Per-call stream state and the audio-event state machine, with no Kafka and no asyncio.

:class:`CallProcessor.process` takes one micro-batch of raw ``callsense.audio`` messages (from
any number of calls, in partition order) and the stored state of their calls, and returns the
events for ``callsense.windows`` (``call_started``, ``window``, ``call_ended`` in call order),
the dead letters, and the new state of every call it touched. The Faust agent in ``app.py`` is
a thin shell around it; tests drive it directly.

Idempotency: a call's state records ``next_seq``. A chunk whose ``seq`` is below it was already
folded into the state (a replay after a crash or rebalance) and is skipped; windows only depend
on the state and the chunks, so replaying from a stored state regenerates the same windows,
which the database then ignores (unique call, speaker, start_ms).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from callsense.processors.conversation import conversation_metrics
from callsense.processors.events import (
    AudioChunk,
    BadEvent,
    CallEnd,
    CallStart,
    call_ended_event,
    call_started_event,
    conversation_event,
    deadletter_event,
    parse_audio_event,
    window_event,
)

from callsense.storage.recordings import Recordings

if TYPE_CHECKING:
    from callsense.settings import Settings

log = logging.getLogger(__name__)

STAGE = "processor"
#: chunks held while waiting for a missing seq before it is given up (16 s at 250 ms)
MAX_REORDER = 64
#: what the chunks held while waiting may weigh in the call's checkpoint (base64), which must
#: stay below the producer's 1 MB message limit together with the pipelines (~0.2 MB per
#: speaker): a 250 ms 16 kHz stereo chunk weighs ~21.5 kB there, so 64 would be 1.4 MB.
#: A diarized mono call also carries the diarizer's state (~0.45 MB, mostly its last 10 s of
#: audio): its reorder buffer gets what is left (:func:`checkpoint_budget`).
MAX_REORDER_BYTES = 480_000
#: what a checkpoint may weigh (Kafka's default max.message.bytes / producer request size)
CHECKPOINT_LIMIT_BYTES = 1_000_000
#: seconds a call_end waits for missing chunks before the call is ended without them
END_WAIT_S = 30.0
#: a diarized mono call's reorder buffer must keep at least this (~3.5 chunks of 250 ms at
#: 16 kHz, 7 at 8 kHz); a configuration that leaves less is refused at start-up
MIN_REORDER_BYTES = 40_000
#: call metadata, counters, the pending call_end and JSON keys
CALL_OVERHEAD_BYTES = 8_000
#: one speaker's smoother (and keys); the model's per-speaker state is bounded by the model
SPEAKER_MODEL_BYTES = 4_000
#: the highest call rate the start-up budget is checked for (a call above it gets a smaller
#: reorder buffer: the resampler's state grows with the rate)
BUDGET_INPUT_RATE = 48_000


class CheckpointBudgetError(ValueError):
    """The configuration cannot keep a call's checkpoint under CHECKPOINT_LIMIT_BYTES."""


def model_state_bound_bytes(settings: Settings) -> int:
    """Upper bound of the model's per-speaker state (``models/speaker_norm.state_bound``)."""
    import json

    from callsense.models.speaker_norm import state_bound

    path = settings.model_dir / "model.json"
    if not path.is_file():  # no model yet: the worker fails on its first window anyway
        return 0
    return state_bound(json.loads(path.read_text()))


def speaker_bound_bytes(cfg: Any, model_state_bytes: int = 0) -> int:
    """Upper bound of one diarized speaker's share of a checkpoint (16 kHz pipeline, smoother,
    model state of ``model_state_bytes``). Between chunks a pipeline holds less than one window
    plus one VAD frame of speech, the VAD's warm-up history and an undecided block, and with
    noise reduction one block plus context on each side; all PCM16 in base64."""

    def b64(n_samples: int) -> int:
        return 4 * -(-2 * int(n_samples) // 3) + 16

    f = cfg.frame_samples
    speech = cfg.window_samples + f
    total = b64(speech) + 10 * (speech // f + 2)  # speech and its frame index
    total += b64(cfg.vad_warmup_frames * f) + b64(cfg.vad_block_frames * f)
    if cfg.noise_reduction:
        sr = cfg.sample_rate
        total += 2 * b64(int((cfg.nr_block_s + 2 * cfg.nr_context_s) * sr))
    return total + SPEAKER_MODEL_BYTES + int(model_state_bytes) + 2_000


def checkpoint_budget(
    settings: Settings, cfg: Any, input_rate: int = BUDGET_INPUT_RATE
) -> dict[str, int]:
    """The byte budget of a diarized mono call's checkpoint at ``input_rate``: the diarizer's
    worst state, the pipelines of ``diarization_max_speakers`` speakers, and what is left for
    the reorder buffer (at most ``MAX_REORDER_BYTES``, possibly negative)."""
    from callsense.processors.diarization.route import state_bound_bytes
    from callsense.processors.diarization.streaming import DiarizerConfig

    dcfg = DiarizerConfig.from_settings(settings)
    dcfg.validate()
    diarizer = state_bound_bytes(dcfg, input_rate)
    speakers = dcfg.max_speakers * speaker_bound_bytes(cfg, model_state_bound_bytes(settings))
    left = CHECKPOINT_LIMIT_BYTES - CALL_OVERHEAD_BYTES - diarizer - speakers
    return {
        "limit": CHECKPOINT_LIMIT_BYTES,
        "diarizer": diarizer,
        "speakers": speakers,
        "max_speakers": dcfg.max_speakers,
        "reorder": min(MAX_REORDER_BYTES, left),
    }


def check_checkpoint_budget(settings: Settings, cfg: Any) -> dict[str, int]:
    """:func:`checkpoint_budget` at start-up: raises :class:`CheckpointBudgetError` when a
    diarized mono call could not keep ``MIN_REORDER_BYTES`` of reorder buffer."""
    out = checkpoint_budget(settings, cfg)
    if out["reorder"] < MIN_REORDER_BYTES:
        raise CheckpointBudgetError(
            f"a diarized mono call's checkpoint cannot fit in {CHECKPOINT_LIMIT_BYTES} bytes: "
            f"the diarizer's state needs up to {out['diarizer']}, {out['max_speakers']} "
            f"speakers' pipelines up to {out['speakers']} (window_s={cfg.window_s}), leaving "
            f"{max(out['reorder'], 0)} bytes for the reorder buffer (at least "
            f"{MIN_REORDER_BYTES} needed). Lower CALLSENSE_DIARIZATION_MAX_SPEAKERS or "
            "CALLSENSE_WINDOW_S, or set CALLSENSE_DIARIZATION_MONO=false."
        )
    return out


@dataclass
class Incoming:
    """One raw message as read from Kafka."""

    value: bytes | None
    key: bytes | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass
class BatchResult:
    outputs: list[dict[str, Any]] = field(default_factory=list)  # -> callsense.windows
    deadletters: list[dict[str, Any]] = field(default_factory=list)  # -> callsense.deadletter
    # call_id -> the call's live context; serialised (encode_state) only when checkpointed
    states: dict[str, CallContext] = field(default_factory=dict)
    stats: Counter = field(default_factory=Counter)


class CallContext:
    """Live objects of one call: its start event, speakers, per-speaker pipelines/smoothers."""

    def __init__(self, start: CallStart, speakers: list[tuple[str, str, int | None]]) -> None:
        self.start = start
        self.speakers = speakers
        self.next_seq = 0
        self.total_samples = 0  # at the call's input rate, end of the furthest chunk seen
        self.ended = False
        self.ended_ts: float | None = None
        # reorder buffer: seq -> raw chunk message (None = dead-lettered), and a call_end that
        # arrived before all of its chunks (brokers may redeliver out of order after recovery)
        self.waiting: dict[str, bytes | None] = {}
        # the same chunks decoded, kept in memory only (a restored call decodes them again)
        self.decoded: dict[str, tuple[AudioChunk, Any]] = {}
        self.end_event: dict[str, Any] | None = None
        self.end_waiting_since: float | None = None
        self.pipelines: dict[str, Any] = {}
        self.smoothers: dict[str, Any] = {}
        # the model's per-speaker normalisation state (callsense.models.speaker_norm)
        self.speaker_states: dict[str, Any] = {}
        # a diarized mono call: its MonoDiarizedStream (speakers appear as it finds them)
        self.diar: Any = None
        self.last_audio_ts = start.ts  # producer time of its newest chunk (or of its start)
        self.conversation_at = 0  # total_samples when live conversation metrics last went out

    def to_state(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "call": asdict(self.start),
            "speakers": [list(s) for s in self.speakers],
            "next_seq": self.next_seq,
            "total_samples": self.total_samples,
            "ended": self.ended,
            "last_audio_ts": self.last_audio_ts,
        }
        if not self.ended:
            d["waiting"] = {k: _b64(v) for k, v in self.waiting.items()}
            d["end_event"] = self.end_event
            d["end_waiting_since"] = (
                self.end_waiting_since
            )  # an ended call keeps only what recognises replays
            d["pipelines"] = {k: p.to_state() for k, p in self.pipelines.items()}
            d["smoothers"] = {k: s.state() for k, s in self.smoothers.items()}
            d["speaker_states"] = {
                k: s.state() for k, s in self.speaker_states.items() if s is not None
            }
            if self.diar is not None:
                d["diar"] = self.diar.to_state()
        return d


#: stored call state as the agent hands it over: the live context (not yet checkpointed), a
#: checkpoint as the changelog holds it (:func:`encode_state`), its decoded dict, or None
Stored = CallContext | bytes | str | Mapping[str, Any] | None

#: a checkpoint: this tag, one JSON line with the call id and how far the state got, then the
#: state as JSON; the line lets a reader compare a cached call without parsing the state
STATE_TAG = b"CS2\n"


def _b64(raw: bytes | None) -> str | None:
    return None if raw is None else base64.b64encode(raw).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    if text is None:
        return None
    if text.startswith("{"):  # a JSON chunk held by a state written before chunks were binary
        return text.encode()
    return base64.b64decode(text)


def _b64_len(raw: bytes) -> int:
    """What ``raw`` weighs in a checkpoint."""
    return 4 * -(-len(raw) // 3)


def _compact(d: Mapping[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


def encode_state(ctx: CallContext) -> bytes:
    """A call's checkpoint as the ``call-state`` changelog holds it."""
    head = {"call_id": ctx.start.call_id, "next_seq": ctx.next_seq, "ended": ctx.ended}
    return STATE_TAG + _compact(head) + b"\n" + _compact(ctx.to_state())


def _head_end(stored: Any) -> int | None:
    """Where the header line of a checkpoint written by :func:`encode_state` ends, else None."""
    if isinstance(stored, bytes | bytearray) and stored.startswith(STATE_TAG):
        return stored.index(b"\n", len(STATE_TAG))
    return None


def state_head(stored: Stored) -> dict[str, Any]:
    """``next_seq`` and ``ended`` of a stored state, without decoding the whole state."""
    if isinstance(stored, CallContext):
        return {"next_seq": stored.next_seq, "ended": stored.ended}
    if (end := _head_end(stored)) is not None:
        return json.loads(stored[len(STATE_TAG) : end])
    d = decode_state(stored)
    return {"next_seq": d.get("next_seq"), "ended": bool(d.get("ended"))}


def decode_state(stored: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    """The state dict of a checkpoint (also of one written as plain JSON, before the tag)."""
    if isinstance(stored, Mapping):
        return dict(stored)
    if (end := _head_end(stored)) is not None:
        return json.loads(stored[end + 1 :])
    return json.loads(stored)


def _conversation(ctx: CallContext, at_ms: int, ended: bool) -> dict[str, Any]:
    """Conversation metrics of a call's first ``at_ms`` from its speakers' VAD segments (live:
    ``ended`` False; at its end: True)."""
    segments = {spk: ctx.pipelines[spk].speech_segments_ms() for spk, _r, _c in ctx.speakers
                if spk in ctx.pipelines}  # fmt: skip
    roles = {spk: role for spk, role, _ch in ctx.speakers}
    return conversation_metrics(segments, roles, at_ms, ended=ended)


class CallProcessor:
    """The per-call state machine; see the module docstring."""

    def __init__(self, settings: Settings, classifier: Any) -> None:
        from callsense.processors.stages import StageConfig

        self.settings = settings
        self.cfg = StageConfig.from_settings(settings)
        if notice := self.cfg.roles_notice():
            log.warning(notice)
        self.classifier = classifier
        self.live: dict[str, CallContext] = {}
        self.idle_timeout_s = float(settings.call_idle_timeout_s)
        self.max_call_s = float(settings.max_call_s)
        self.max_chunk_bytes = int(settings.max_chunk_bytes)
        self.max_calls = settings.max_calls_per_worker
        self.refused: dict[str, None] = {}  # calls refused at capacity (newest last, bounded)
        # idleness is judged on producer time: a worker catching up on a backlog sees other
        # calls' chunks move the watermark on, and only a quiet input means a quiet call
        self.watermark_ts = 0.0  # newest producer ts of any chunk processed here
        self.last_input_at = time.time()  # wall clock of the newest non-empty batch
        self.conversation_every_s = float(settings.live_conversation_s)
        self.recordings = (
            Recordings(settings.data_dir / "recordings")
            if settings.recording_retention_days > 0
            else None
        )
        self.diarize_mono = bool(getattr(settings, "diarization_mono", False))
        if self.diarize_mono:  # refuse a configuration whose checkpoints cannot fit
            check_checkpoint_budget(settings, self.cfg)
        self._reorder_bytes: dict[int, int] = {}  # call rate -> diarized call's reorder bytes
        self._diar_models: Any = None

    def reorder_bytes(self, ctx: CallContext) -> int:
        """Raw chunk bytes a call may hold while waiting for a missing chunk: a diarized mono
        call gets what its checkpoint budget leaves (the diarizer and pipelines take most)."""
        if ctx.diar is None:
            return MAX_REORDER_BYTES
        rate = ctx.start.sample_rate
        if rate not in self._reorder_bytes:
            left = checkpoint_budget(self.settings, self.cfg, rate)["reorder"]
            self._reorder_bytes[rate] = max(0, left)
        return self._reorder_bytes[rate]

    def _diarization_models(self) -> Any:
        """The diarization models, loaded once per process on first use (in the executor
        thread that runs :meth:`process`, like the emotion model)."""
        if self._diar_models is None:
            from callsense.processors.diarization.weights import load_models

            self._diar_models = load_models()
        return self._diar_models

    # ---------------------------------------------------------------- state <-> live objects
    def _context(self, call_id: str, stored: Stored) -> CallContext | None:
        """The live context of a call: ``stored`` itself when it is one; else the cached
        context when it got exactly as far as the checkpoint ``stored``; else rebuilt from it."""
        if stored is None:
            self.live.pop(call_id, None)
            return None
        if isinstance(stored, CallContext):
            self.live[call_id] = stored
            return stored
        head = state_head(stored)
        ctx = self.live.get(call_id)
        if ctx is not None and (ctx.next_seq, ctx.ended) == (head["next_seq"], head["ended"]):
            return ctx
        ctx = self._from_state(decode_state(stored))
        self.live[call_id] = ctx
        return ctx

    def _from_state(self, state: dict[str, Any]) -> CallContext:
        from callsense.processors.stages import SpeakerPipeline

        start = CallStart(**state["call"])
        ctx = CallContext(start, [tuple(s) for s in state["speakers"]])  # type: ignore[misc]
        ctx.next_seq = int(state["next_seq"])
        ctx.total_samples = int(state.get("total_samples", 0))
        ctx.ended = bool(state.get("ended"))
        ctx.waiting = {k: _unb64(v) for k, v in (state.get("waiting") or {}).items()}
        ctx.end_event = state.get("end_event")
        ctx.end_waiting_since = state.get("end_waiting_since")
        ctx.last_audio_ts = float(state.get("last_audio_ts") or start.ts)
        if not ctx.ended:
            ctx.pipelines = {
                k: SpeakerPipeline.from_state(self.cfg, v)
                for k, v in state.get("pipelines", {}).items()
            }
            ctx.smoothers = {
                k: self.classifier.smoother_from_state(v)
                for k, v in state.get("smoothers", {}).items()
            }
            ctx.speaker_states = {
                k: self.classifier.speaker_state_from(v)
                for k, v in state.get("speaker_states", {}).items()
            }
            if state.get("diar") is not None:
                from callsense.processors.diarization.route import MonoDiarizedStream

                ctx.diar = MonoDiarizedStream.from_state(self._diarization_models(), state["diar"])
        return ctx

    def _new_context(self, start: CallStart) -> CallContext:
        from callsense.processors.stages import SpeakerPipeline, speakers_for

        if self.diarize_mono and start.channels == 1:
            from callsense.processors.diarization.route import MonoDiarizedStream
            from callsense.processors.diarization.streaming import DiarizerConfig

            ctx = CallContext(start, [])  # speakers are added as the diarizer finds them
            ctx.diar = MonoDiarizedStream(
                self._diarization_models(),
                DiarizerConfig.from_settings(self.settings),
                start.sample_rate,
                max_gap_s=self.cfg.max_gap_s,
            )
            return ctx
        speakers = [tuple(s) for s in speakers_for(start.channels, start.agent_channel)]
        ctx = CallContext(start, speakers)  # type: ignore[arg-type]
        for spk, role, _ch in speakers:
            ctx.pipelines[spk] = SpeakerPipeline(self.cfg, start.sample_rate, spk, role)
            ctx.smoothers[spk] = self.classifier.new_smoother()
        return ctx

    # ---------------------------------------------------------------- the state machine
    def process(self, batch: list[Incoming], states: Mapping[str, Stored]) -> BatchResult:
        """Apply a micro-batch. ``states`` maps call id -> stored state (None = unknown).

        Synchronous and CPU-bound: the agent runs it in the inference executor.
        """
        res = BatchResult()
        if batch:
            self.last_input_at = time.time()
        touched: dict[str, CallContext] = {}
        pending: dict[str, list[Any]] = {}  # call_id -> windows awaiting classification
        before: dict[str, list[dict[str, Any]]] = {}  # call_started events
        after: dict[str, list[dict[str, Any]]] = {}  # call_ended events
        order: list[str] = []

        def ctx_for(call_id: str) -> CallContext | None:
            if call_id in touched:
                return touched[call_id]
            return self._context(call_id, states.get(call_id))

        def touch(ctx: CallContext) -> None:
            cid = ctx.start.call_id
            if cid not in touched:
                touched[cid] = ctx
                order.append(cid)
            self.live[cid] = ctx

        def dead(msg: Incoming, reason: str, call_id: str | None) -> None:
            res.stats["deadletters"] += 1
            log.warning("dead letter (call %s, offset %s): %s", call_id, msg.offset, reason)
            res.deadletters.append(
                deadletter_event(
                    STAGE,
                    reason,
                    msg.value,
                    call_id=call_id,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                )
            )

        for cid, stored in states.items():  # adopt live calls (e.g. after a restart) for the
            if cid not in self.live and stored is not None and not state_head(stored)["ended"]:
                self._context(cid, stored)  # idle check below

        for msg in batch:
            if msg.key is None:  # partitioning by call id is what keeps a call's chunks in order
                dead(msg, "message has no key (the key must be the call id)", None)
                continue
            try:
                ev = parse_audio_event(msg.value, msg.key)
            except BadEvent as exc:
                dead(msg, exc.reason, exc.call_id)
                continue
            cid = ev.call_id
            ctx = ctx_for(cid)
            try:
                if isinstance(ev, CallStart):
                    if ctx is not None:
                        if ctx.start.ts == ev.ts:
                            res.stats["duplicates"] += 1  # replayed call_start
                        else:
                            dead(msg, f"call id {cid!r} is already in use", cid)
                        continue
                    if self.max_calls and (n_live := self.live_calls()) >= self.max_calls:
                        self._refuse(cid)
                        reason = (
                            f"worker at capacity: {n_live} live calls "
                            f"(CALLSENSE_MAX_CALLS_PER_WORKER={self.max_calls})"
                        )
                        dead(msg, reason, cid)
                        continue
                    ctx = self._new_context(ev)
                    touch(ctx)
                    before.setdefault(cid, []).append(call_started_event(ev, ctx.speakers))
                    res.stats["calls_started"] += 1
                elif isinstance(ev, AudioChunk):
                    if ctx is None and cid in self.refused:
                        dead(msg, f"chunk of call {cid!r}, refused at capacity", cid)
                    elif ctx is None:
                        dead(msg, f"chunk for unknown call {cid!r} (no call_start seen)", cid)
                    elif ev.seq < ctx.next_seq or str(ev.seq) in ctx.waiting:
                        res.stats["duplicates"] += 1
                    elif ctx.ended:
                        why = f"chunk seq {ev.seq} after call_end of {cid!r}"
                        if (ctx.end_event or {}).get("status") == "truncated":
                            why += " (ended as truncated: longer than CALLSENSE_MAX_CALL_S)"
                        dead(msg, why, cid)
                    else:
                        touch(ctx)
                        ts = ev.ts or time.time()  # a chunk without ts: arrival time
                        ctx.last_audio_ts = max(ctx.last_audio_ts, ts)
                        self.watermark_ts = max(self.watermark_ts, ts)
                        if self._past_max_call(ev):
                            self._truncate(ctx, ev)
                        reason = self._check(ctx, ev, len(msg.value))
                        if reason:
                            dead(msg, reason, cid)
                            ctx.waiting[str(ev.seq)] = None
                        else:
                            raw = msg.value.encode() if isinstance(msg.value, str) else msg.value
                            ctx.waiting[str(ev.seq)] = bytes(raw)
                            ctx.decoded[str(ev.seq)] = (ev, ev.samples())
                        if ev.seq > ctx.next_seq:
                            res.stats["reordered"] += 1
                        self._drain(ctx, pending, after, res, force=False)
                elif isinstance(ev, CallEnd):
                    if ctx is None and cid in self.refused:
                        dead(msg, f"call_end of call {cid!r}, refused at capacity", cid)
                    elif ctx is None:
                        dead(msg, f"call_end for unknown call {cid!r}", cid)
                    elif ctx.ended or ctx.end_event is not None:
                        res.stats["duplicates"] += 1
                    else:
                        touch(ctx)
                        ctx.end_event = asdict(ev)
                        ctx.end_waiting_since = time.time()
                        self._drain(ctx, pending, after, res, force=False)
            except BadEvent as exc:
                dead(msg, exc.reason, cid)
            except Exception as exc:  # a stage failed on this input: keep the others going
                log.exception("stage error on call %s", cid)
                dead(msg, f"stage error: {type(exc).__name__}: {exc}", cid)

        # a call_end still missing chunks long after it arrived: end with what is there;
        # a call without audio for the idle timeout (its producer is gone): end it as abandoned
        now = time.time()
        for ctx in list(self.live.values()):
            since = ctx.end_waiting_since
            if not ctx.ended and since is not None and now - since > END_WAIT_S:
                log.warning("call %s: ending without missing chunks", ctx.start.call_id)
                touch(ctx)
                self._drain(ctx, pending, after, res, force=True)
            elif not ctx.ended and since is None and self._idle(ctx, now):
                cid = ctx.start.call_id
                log.warning("call %s: no audio for %.0f s; ending it as abandoned", cid,
                            max(self.watermark_ts, now) - ctx.last_audio_ts)  # fmt: skip
                ctx.end_event = {"call_id": cid, "last_seq": -1, "ts": now, "status": "abandoned",
                                 "total_samples": ctx.total_samples}  # fmt: skip
                touch(ctx)
                self._drain(ctx, pending, after, res, force=True)
                res.stats["calls_abandoned"] += 1

        # one batched inference over every call of the micro-batch
        cids = [c for c in order if pending.get(c)]
        requests = [(pending[c], touched[c].smoothers, touched[c].speaker_states) for c in cids]
        results = self.classifier.classify_many(requests) if requests else []
        by_call = dict(zip(cids, results, strict=True))
        for cid in order:
            ctx = touched[cid]
            res.outputs.extend(before.get(cid, []))
            for r in by_call.get(cid, []):
                res.outputs.append(window_event(r.to_row(cid)))
                res.stats["windows"] += 1
            res.outputs.extend(after.get(cid, []))
            if live := self._live_conversation(ctx):
                res.outputs.append(live)
            res.states[cid] = ctx
            if ctx.ended:
                ctx.pipelines.clear()
                ctx.smoothers.clear()
                ctx.speaker_states.clear()
        return res

    def _live_conversation(self, ctx: CallContext) -> dict[str, Any] | None:
        """A live call's conversation metrics so far, every ``live_conversation_s`` of its
        audio (None when not due, off, or the call has ended)."""
        every = self.conversation_every_s * ctx.start.sample_rate
        if ctx.ended or every <= 0 or ctx.total_samples - ctx.conversation_at < every:
            return None
        ctx.conversation_at = ctx.total_samples
        at_ms = round(1000 * ctx.total_samples / ctx.start.sample_rate)
        return conversation_event(ctx.start.call_id, at_ms, _conversation(ctx, at_ms, False))

    def _idle(self, ctx: CallContext, now: float) -> bool:
        """No chunk of ``ctx`` for the idle timeout: while other calls' chunks went on (their
        producer time passed it by), or while no input at all reached this worker."""
        timeout = self.idle_timeout_s
        if self.watermark_ts - ctx.last_audio_ts > timeout:
            return True
        return now - self.last_input_at > timeout and now - ctx.last_audio_ts > timeout

    # ---------------------------------------------------------------- chunk helpers
    def live_calls(self) -> int:
        return sum(1 for c in self.live.values() if not c.ended)

    def _refuse(self, cid: str) -> None:
        self.refused[cid] = None
        while len(self.refused) > 10_000:
            del self.refused[next(iter(self.refused))]

    def max_chunk(self, ctx: CallContext) -> int:
        """Largest chunk message ``ctx`` takes: one must fit its reorder buffer on its own, or
        a large chunk arriving early would make the call give up the chunks before it."""
        return min(self.max_chunk_bytes, self.reorder_bytes(ctx) * 3 // 4)

    def _past_max_call(self, ev: AudioChunk) -> bool:
        return ev.start_sample >= self.max_call_s * ev.sample_rate

    def _truncate(self, ctx: CallContext, ev: AudioChunk) -> None:
        """End a call whose audio runs past ``max_call_s`` after the chunks before ``ev``."""
        if ctx.end_event is None:
            log.warning("call %s: longer than %.0f s; ending it as truncated",
                        ctx.start.call_id, self.max_call_s)  # fmt: skip
            ctx.end_event = {"call_id": ctx.start.call_id, "last_seq": ev.seq - 1,
                             "ts": ev.ts or time.time(), "status": "truncated",
                             "total_samples": ctx.total_samples}  # fmt: skip
            ctx.end_waiting_since = time.time()

    def _check(self, ctx: CallContext, ev: AudioChunk, size: int) -> str | None:
        """Why this chunk cannot be used in its call (None if it can); its payload was
        checked when it was parsed."""
        if self._past_max_call(ev):
            return (
                f"call longer than CALLSENSE_MAX_CALL_S ({self.max_call_s:.0f} s): chunk seq "
                f"{ev.seq} starts at {ev.start_sample / ev.sample_rate:.0f} s; the call ends as "
                "'truncated'"
            )
        if size > (limit := self.max_chunk(ctx)):
            return (
                f"chunk seq {ev.seq} is {size} bytes, more than this call takes "
                f"({limit}; CALLSENSE_MAX_CHUNK_BYTES={self.max_chunk_bytes})"
            )
        if ev.sample_rate != ctx.start.sample_rate:
            return (
                f"sample rate changed mid-call: chunk seq {ev.seq} is {ev.sample_rate} Hz, "
                f"call started at {ctx.start.sample_rate} Hz"
            )
        if ev.channels != ctx.start.channels:
            return (
                f"channel count changed mid-call: chunk seq {ev.seq} has {ev.channels}, "
                f"call started with {ctx.start.channels}"
            )
        return None

    def _drain(
        self,
        ctx: CallContext,
        pending: dict[str, list[Any]],
        after: dict[str, list[dict[str, Any]]],
        res: BatchResult,
        force: bool,
    ) -> None:
        """Feed the waiting chunks in seq order; end the call once all its chunks are in.

        ``force`` (or more than ``MAX_REORDER`` chunks waiting) skips over missing seqs.
        """
        cid = ctx.start.call_id
        windows = pending.setdefault(cid, [])
        while True:
            key = str(ctx.next_seq)
            if key in ctx.waiting:
                raw = ctx.waiting.pop(key)
                decoded = ctx.decoded.pop(key, None)
                if raw is not None:
                    if decoded is None:  # held in a restored state: decode it again
                        ev = parse_audio_event(raw)
                        decoded = (ev, ev.samples())  # type: ignore[union-attr]
                    self._push(ctx, *decoded, windows)
                    res.stats["chunks"] += 1
                ctx.next_seq += 1
                continue
            end = ctx.end_event
            last = int(end["last_seq"]) if end is not None else 0
            if end is not None and (ctx.next_seq > last or (last < 0 and not ctx.waiting)):
                # last_seq < 0: the producer did not say how many chunks there were
                self._finish(ctx, windows, after, res)
                return
            held = sum(_b64_len(raw) for raw in ctx.waiting.values() if raw)
            too_many = len(ctx.waiting) > MAX_REORDER or held > self.reorder_bytes(ctx)
            if ctx.waiting and (force or too_many):
                nxt = min(int(k) for k in ctx.waiting)
                log.warning("call %s: chunks %d..%d never arrived", cid, ctx.next_seq, nxt - 1)
                res.stats["missing_chunks"] += nxt - ctx.next_seq
                ctx.next_seq = nxt
                continue
            if force and end is not None:
                self._finish(ctx, windows, after, res)
            return

    def _push(self, ctx: CallContext, ev: AudioChunk, audio: Any, windows: list[Any]) -> None:
        if self.recordings is not None:
            self.recordings.write(ctx.start.call_id, ev.sample_rate, ev.start_sample, audio)
        if ctx.diar is not None:
            self._route(ctx, ctx.diar.push(audio[0], ev.start_sample), windows)
        else:
            for spk, _role, ch in ctx.speakers:
                mono = audio[ch] if ch is not None else audio.mean(axis=0)
                windows.extend(ctx.pipelines[spk].push(mono, ev.start_sample))
        ctx.total_samples = max(ctx.total_samples, ev.start_sample + audio.shape[1])

    def _route(self, ctx: CallContext, chunks: list[Any], windows: list[Any]) -> None:
        """Diarized speaker chunks (16 kHz) -> their pipelines, created on first sight."""
        from callsense.processors.diarization.route import route_chunks

        def on_new(speaker_id: str, role: str) -> None:
            ctx.smoothers[speaker_id] = self.classifier.new_smoother()
            ctx.speakers.append((speaker_id, role, None))

        windows.extend(route_chunks(chunks, ctx.pipelines, self.cfg, on_new))

    def _finish(
        self,
        ctx: CallContext,
        windows: list[Any],
        after: dict[str, list[dict[str, Any]]],
        res: BatchResult,
    ) -> None:
        cid = ctx.start.call_id
        if ctx.diar is not None:
            self._route(ctx, ctx.diar.flush(), windows)
            ctx.diar = None
        talk: dict[str, float] = {}
        for spk, _role, _ch in ctx.speakers:
            pipe = ctx.pipelines[spk]
            windows.extend(pipe.flush())
            talk[spk] = float(pipe.talk_time_s)
        duration = ctx.total_samples / float(ctx.start.sample_rate)
        conversation = _conversation(ctx, round(duration * 1000), True)
        ts = float((ctx.end_event or {}).get("ts", 0.0))
        ctx.ended, ctx.ended_ts = True, ts
        if self.recordings is not None:
            self.recordings.finish(cid)
        ctx.waiting.clear()
        ctx.decoded.clear()
        status = str((ctx.end_event or {}).get("status", "ended"))
        after.setdefault(cid, []).append(
            call_ended_event(
                cid, duration, talk, ts, speakers=ctx.speakers, status=status,
                conversation=conversation,
            )  # fmt: skip
        )
        res.stats["calls_ended"] += 1
