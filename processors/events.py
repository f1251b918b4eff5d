"""Every event on every callsense topic: names, JSON schemas, encoding and validation.

All topics are keyed by call id (UTF-8), so every event of one call lands in one partition and is
read in order, and the per-call state lives with the partition that owns the call. Values are
JSON objects with a ``kind`` field, except audio chunks (binary, see below). Plain dataclasses
(no Faust import) so ingest, tests and other tools can produce and parse events with nothing but
a Kafka client.

Topics (created by :func:`ensure_topics` with ``settings.topic_partitions`` partitions):

``callsense.audio``      ingest -> processor: ``call_start``, ``chunk``, ``call_end``. Control
                         events travel with the audio so that the partition orders them: a
                         chunk can never overtake its call's start or end. Chunks are binary
                         (:meth:`AudioChunk.encode`: a short JSON header and the samples as
                         PCM16 or, for telephone audio, G.711 mu-law bytes); a JSON chunk with
                         base64 ``pcm`` is accepted too, for producers that can only send text.
``callsense.windows``    processor -> persistence, alerts: ``call_started``, ``window``,
                         ``call_ended`` (in call order; consumers that only want windows keep
                         ``kind == "window"``).
``callsense.summaries``  persistence -> anyone: ``summary`` once it is stored.
``callsense.deadletter`` any stage: ``deadletter`` with the original payload, reason, stage.
``callsense.alerts``     alerts -> webhooks, anyone: alert lifecycle events, once stored.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from callsense.settings import Settings

AUDIO_TOPIC = "callsense.audio"
WINDOWS_TOPIC = "callsense.windows"
SUMMARIES_TOPIC = "callsense.summaries"
DEADLETTER_TOPIC = "callsense.deadletter"
ALERTS_TOPIC = "callsense.alerts"  # alert lifecycle events (alerts.AlertEvent.to_json)
ALL_TOPICS = (AUDIO_TOPIC, WINDOWS_TOPIC, SUMMARIES_TOPIC, DEADLETTER_TOPIC, ALERTS_TOPIC)
#: topics that carry raw audio get ``retention.ms = settings.audio_retention_ms``
AUDIO_TOPICS = (AUDIO_TOPIC,)

MAX_CHANNELS = 2
MAX_SAMPLE_RATE = 192_000
MAX_SEQ = 10**9  # 250 ms chunks: ~8 years of one call
MAX_START_SAMPLE = 2**40  # ~2 years at 16 kHz
MAX_META_CHARS = 256
TS_MIN = 946_684_800.0  # 2000-01-01
TS_MAX_AHEAD_S = 86_400.0


class BadEvent(ValueError):
    """An event that cannot be processed; ``reason`` goes to the dead-letter topic."""

    def __init__(self, reason: str, call_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.call_id = call_id


def now() -> float:
    return time.time()


def _dumps(d: dict[str, Any]) -> bytes:
    return json.dumps(d, separators=(",", ":"), allow_nan=False).encode()


# --------------------------------------------------------------------------- audio topic


@dataclass
class CallStart:
    call_id: str
    sample_rate: int
    channels: int
    agent_channel: int = 0
    agent_id: str | None = None
    customer_id: str | None = None
    queue: str | None = None
    source: str | None = None
    ts: float = field(default_factory=now)
    kind: str = "call_start"

    def encode(self) -> bytes:
        return _dumps(asdict(self))


#: a binary chunk: this tag, the header's length (uint16, big endian), the header (JSON: every
#: field but the samples), then the samples, interleaved when stereo
CHUNK_TAG = b"CSA1"
#: sample codecs of a chunk: little-endian int16, or G.711 mu-law (one byte per sample)
CODECS = {"pcm16": 2, "mulaw": 1}


@dataclass
class AudioChunk:
    """``data``: the samples in ``codec``, interleaved when stereo."""

    call_id: str
    seq: int
    start_sample: int
    sample_rate: int
    channels: int
    data: bytes
    codec: str = "pcm16"
    ts: float = field(default_factory=now)
    kind: str = "chunk"

    @classmethod
    def from_array(
        cls,
        call_id: str,
        seq: int,
        start_sample: int,
        sample_rate: int,
        chunk: np.ndarray,
        codec: str = "pcm16",
    ) -> AudioChunk:
        """``chunk``: (channels, samples) float in [-1, 1], or int16. mu-law is lossy except
        for samples that came from mu-law (telephone audio): only those should use it."""
        from callsense.processors.stages import to_pcm16

        chunk = np.atleast_2d(chunk)
        pcm = chunk if chunk.dtype == np.int16 else to_pcm16(np.asarray(chunk, np.float32))
        frames = np.ascontiguousarray(pcm.T)  # interleaved
        if codec == "mulaw":
            from callsense.models.g711 import mulaw_encode

            data = mulaw_encode(frames.ravel())
        elif codec == "pcm16":
            data = frames.astype("<i2").tobytes()
        else:
            raise ValueError(f"unknown codec {codec!r}")
        return cls(
            call_id, int(seq), int(start_sample), int(sample_rate), chunk.shape[0], data, codec
        )

    @property
    def n_samples(self) -> int:
        return len(self.data) // (CODECS[self.codec] * self.channels)

    def samples(self) -> np.ndarray:
        """Decode to (channels, samples) float32."""
        from callsense.processors.stages import from_pcm16

        if self.codec == "mulaw":
            from callsense.models.g711 import mulaw_decode

            ints = mulaw_decode(self.data)
        else:
            ints = np.frombuffer(self.data, dtype="<i2")
        return np.ascontiguousarray(from_pcm16(ints.reshape(-1, self.channels).T))

    def encode(self) -> bytes:
        """The binary message value (see :data:`CHUNK_TAG`)."""
        head = {k: v for k, v in asdict(self).items() if k != "data"}
        raw = _dumps(head)
        return CHUNK_TAG + len(raw).to_bytes(2, "big") + raw + self.data

    def to_json(self) -> bytes:
        """The same chunk as text (base64 PCM16), as a producer without binary values sends."""
        d = {k: v for k, v in asdict(self).items() if k not in ("data", "codec")}
        if self.codec == "mulaw":
            from callsense.models.g711 import mulaw_decode

            pcm = mulaw_decode(self.data).astype("<i2").tobytes()
        else:
            pcm = self.data
        d["pcm"] = base64.b64encode(pcm).decode("ascii")
        return _dumps(d)


@dataclass
class CallEnd:
    call_id: str
    last_seq: int
    total_samples: int
    ts: float = field(default_factory=now)
    kind: str = "call_end"

    def encode(self) -> bytes:
        return _dumps(asdict(self))


AudioEvent = CallStart | AudioChunk | CallEnd


def decode_b64_pcm16(pcm: str, call_id: str | None = None) -> bytes:
    """A JSON chunk's base64 ``pcm`` -> raw PCM16 bytes; :class:`BadEvent` when corrupt."""
    try:
        return base64.b64decode(pcm, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadEvent(f"corrupt chunk: pcm is not valid base64 ({exc})", call_id) from exc


def _check_payload(data: bytes, codec: str, channels: int, call_id: str) -> None:
    frame = CODECS[codec] * channels
    if not data:
        raise BadEvent("corrupt chunk: empty audio payload", call_id)
    if len(data) % frame:
        raise BadEvent(
            f"corrupt chunk: {len(data)} bytes is not a whole number of {channels}-channel "
            f"{codec} frames",
            call_id,
        )


def _req(d: dict[str, Any], name: str, typ: type | tuple[type, ...], call_id: str | None) -> Any:
    if name not in d:
        raise BadEvent(f"missing field {name!r}", call_id)
    value = d[name]
    if isinstance(value, bool) or not isinstance(value, typ):
        raise BadEvent(f"field {name!r} has wrong type {type(value).__name__}", call_id)
    return value


_MISSING = object()


def _int(
    d: dict[str, Any], name: str, lo: int, hi: int, call_id: str | None, default: Any = _MISSING
) -> int:
    """An integer field within [lo, hi] (JSON numbers like 3.0 are not integers here)."""
    if name not in d and default is not _MISSING:
        return default
    value = _req(d, name, int, call_id)
    if not lo <= value <= hi:
        raise BadEvent(f"field {name!r} = {value} out of range [{lo}, {hi}]", call_id)
    return value


def _ts(d: dict[str, Any], call_id: str | None, required: bool) -> float:
    """Producer time (Unix seconds): finite, after 2000-01-01 and at most a day ahead."""
    if "ts" not in d and not required:
        return 0.0
    value = _req(d, "ts", (int, float), call_id)
    if not math.isfinite(value) or not TS_MIN <= value <= time.time() + TS_MAX_AHEAD_S:
        raise BadEvent(f"field 'ts' = {value!r} is not a plausible Unix time", call_id)
    return float(value)


def _opt_str(d: dict[str, Any], name: str, call_id: str | None = None) -> str | None:
    value = d.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_META_CHARS:
        raise BadEvent(f"field {name!r} must be a string of at most {MAX_META_CHARS}", call_id)
    return value


def loads_object(value: bytes | str | None) -> dict[str, Any]:
    """Parse a message value as a JSON object, or raise :class:`BadEvent`."""
    if value is None:
        raise BadEvent("empty message value")
    try:
        d = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadEvent(f"value is not JSON ({exc})") from exc
    if not isinstance(d, dict):
        raise BadEvent(f"value is a JSON {type(d).__name__}, expected an object")
    return d


def _split_chunk(value: bytes) -> tuple[dict[str, Any], bytes]:
    """A binary chunk -> (its header, its samples); :class:`BadEvent` when malformed."""
    n = int.from_bytes(value[len(CHUNK_TAG) : len(CHUNK_TAG) + 2], "big")
    body = len(CHUNK_TAG) + 2
    if len(value) < body + n:
        raise BadEvent("corrupt chunk: the binary header is cut short")
    d = loads_object(value[body : body + n])
    if d.get("kind") != "chunk":
        raise BadEvent(f"binary event of kind {d.get('kind')!r}: only chunks are binary")
    return d, value[body + n :]


def parse_audio_event(value: bytes | str | None, key: bytes | str | None = None) -> AudioEvent:
    """Validate one ``callsense.audio`` message; :class:`BadEvent` says why it is unusable."""
    data: bytes | None = None
    if isinstance(value, bytes | bytearray) and value.startswith(CHUNK_TAG):
        d, data = _split_chunk(bytes(value))
    else:
        d = loads_object(value)
    call_id = d.get("call_id")
    if not isinstance(call_id, str) or not call_id or len(call_id) > 128:
        raise BadEvent("missing or invalid call_id (1-128 characters)")
    if key is not None:
        key_s = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if key_s != call_id:
            raise BadEvent(f"message key {key_s!r} differs from call_id {call_id!r}", call_id)
    kind = d.get("kind")
    if kind == "chunk":
        channels = _int(d, "channels", 1, MAX_CHANNELS, call_id)
        rate = _int(d, "sample_rate", 1000, MAX_SAMPLE_RATE, call_id)
        seq = _int(d, "seq", 0, MAX_SEQ, call_id)
        start = _int(d, "start_sample", 0, MAX_START_SAMPLE, call_id)
        if data is None:  # a JSON chunk: base64 PCM16
            codec = "pcm16"
            data = decode_b64_pcm16(_req(d, "pcm", str, call_id), call_id)
        else:
            codec = d.get("codec", "pcm16")
            if codec not in CODECS:
                raise BadEvent(f"unknown codec {codec!r} (expected one of {list(CODECS)})", call_id)
        _check_payload(data, codec, channels, call_id)
        return AudioChunk(call_id, seq, start, rate, channels, data, codec, _ts(d, call_id, False))
    if kind == "call_start":
        channels = _int(d, "channels", 1, MAX_CHANNELS, call_id)
        rate = _int(d, "sample_rate", 1000, MAX_SAMPLE_RATE, call_id)
        agent_channel = _int(d, "agent_channel", 0, 1, call_id, default=0)
        return CallStart(
            call_id,
            rate,
            channels,
            agent_channel,
            _opt_str(d, "agent_id", call_id),
            _opt_str(d, "customer_id", call_id),
            _opt_str(d, "queue", call_id),
            _opt_str(d, "source", call_id),
            _ts(d, call_id, True),
        )
    if kind == "call_end":
        return CallEnd(
            call_id,
            _int(d, "last_seq", -1, MAX_SEQ, call_id, default=-1),
            _int(d, "total_samples", 0, MAX_START_SAMPLE, call_id, default=0),
            _ts(d, call_id, False),
        )
    raise BadEvent(f"unknown event kind {kind!r}", call_id)


# --------------------------------------------------------------------------- windows topic


def call_started_event(
    start: CallStart, speakers: list[tuple[str, str, int | None]]
) -> dict[str, Any]:
    d = asdict(start)
    d["kind"] = "call_started"
    d["speakers"] = [{"speaker": s, "role": r, "channel": c} for s, r, c in speakers]
    return d


def window_event(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` = ``WindowResult.to_row(call_id)``: call_id, speaker, role, start_ms, end_ms,
    label, raw_label, confidence, uncertain, probabilities, smoothed_label,
    smoothed_probabilities."""
    d = {k: v for k, v in row.items() if k not in ("id", "created_at")}
    d["kind"] = "window"
    return d


def conversation_event(call_id: str, at_ms: int, conversation: dict[str, Any]) -> dict[str, Any]:
    """The conversation metrics of a live call so far (its first ``at_ms`` of audio); a later
    event of the same call supersedes an earlier one, and ``call_ended`` carries the final."""
    return {"kind": "conversation", "call_id": call_id, "at_ms": int(at_ms),
            "conversation": conversation}  # fmt: skip


def call_ended_event(
    call_id: str,
    duration_s: float,
    talk_time_s: dict[str, float],
    ts: float,
    speakers: list[tuple[str, str, int | None]] | None = None,
    status: str = "ended",
    conversation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``speakers``: every speaker of the call (a diarized mono call's call_started cannot
    list them up front: they are found as the call goes). ``status``: ended, abandoned
    (no audio for CALLSENSE_CALL_IDLE_TIMEOUT_S and no call_end) or truncated (audio past
    CALLSENSE_MAX_CALL_S). ``conversation``: :func:`~callsense.processors.conversation.
    conversation_metrics` of the call."""
    d: dict[str, Any] = {
        "kind": "call_ended",
        "call_id": call_id,
        "status": status,
        "duration_s": float(duration_s),
        "talk_time_s": {k: float(v) for k, v in talk_time_s.items()},
        "ts": ts,
    }
    if speakers is not None:
        d["speakers"] = [{"speaker": s, "role": r, "channel": c} for s, r, c in speakers]
    if conversation is not None:
        d["conversation"] = conversation
    return d


def dumps(d: dict[str, Any]) -> bytes:
    return _dumps(d)


def call_events(
    start: CallStart, audio: np.ndarray, chunk_ms: int
) -> Iterator[tuple[AudioEvent, int]]:
    """The ``callsense.audio`` events of one recorded call, in order: ``start``, every chunk of
    ``audio`` (``(channels, T)`` float at ``start.sample_rate``), the call end; each with the
    input sample where its audio ends (for pacing; a sender that paces sets ``ts`` when it
    sends). What ingest sends and offline analysis processes: a file is one more source of the
    same events."""
    from callsense.processors.stages import chunk_audio

    sr = int(start.sample_rate)
    yield start, 0
    seq = -1
    for seq, start_sample, chunk in chunk_audio(audio, sr, chunk_ms):
        yield (
            AudioChunk.from_array(start.call_id, seq, start_sample, sr, chunk),
            start_sample + chunk.shape[1],
        )
    yield CallEnd(start.call_id, seq, int(audio.shape[1])), int(audio.shape[1])


# --------------------------------------------------------------------------- dead letters


def deadletter_event(
    stage: str,
    reason: str,
    original: bytes | str | None,
    *,
    call_id: str | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """The original payload (UTF-8 text, or base64 when it is not text), why, and where."""
    if isinstance(original, bytes):
        try:
            text, encoding = original.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(original).decode("ascii"), "base64"
    else:
        text, encoding = original, "utf-8"
    return {
        "kind": "deadletter",
        "stage": stage,
        "reason": reason,
        "call_id": call_id,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "original": text,
        "original_encoding": encoding,
        "ts": now(),
    }


class DeadLetterFilter:
    """Drops dead letters this process already sent for the same input record.

    Delivery is at-least-once: a rebalance re-reads records from the committed offset, and a bad
    one is rejected again. A dead letter's identity is (stage, topic, partition, offset); the
    last ``capacity`` identities are remembered. After a restart repeats can still reach the
    topic, so its readers dedupe by the same identity.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self.sent: dict[tuple[Any, ...], None] = {}  # insertion-ordered: oldest first
        self.dropped = 0

    def fresh(self, letters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for dl in letters:
            if dl.get("offset") is None:  # no source record to recognise it by
                out.append(dl)
                continue
            ident = (dl["stage"], dl.get("topic"), dl.get("partition"), dl["offset"])
            if ident in self.sent:
                self.dropped += 1
                continue
            self.sent[ident] = None
            out.append(dl)
        while len(self.sent) > self.capacity:
            del self.sent[next(iter(self.sent))]
        return out


# --------------------------------------------------------------------------- topic creation


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Per-topic configs: audio topics get a retention limit."""
    return {
        name: ({"retention.ms": str(settings.audio_retention_ms)} if name in AUDIO_TOPICS else {})
        for name in ALL_TOPICS
    }


async def ensure_topics_async(bootstrap: str, settings: Settings) -> list[str]:
    """Create the callsense topics with ``settings.topic_partitions`` partitions if missing.

    Returns the names created. Existing topics are left alone (a partition-count mismatch is
    reported as an error: changing it would move calls between partitions).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        configs = topic_configs(settings)
        new = [
            NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                topic_configs=configs[name],
            )
            for name in ALL_TOPICS
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
        present = [n for n in ALL_TOPICS if n in existing]
        if present:
            described = await admin.describe_topics(present)
            for t in described:
                n = len(t.get("partitions", []))
                if n and n != settings.topic_partitions:
                    raise RuntimeError(
                        f"topic {t['topic']} has {n} partitions, settings say "
                        f"{settings.topic_partitions}; use a fresh broker or adjust "
                        "CALLSENSE_TOPIC_PARTITIONS"
                    )
        return [t.name for t in new]
    finally:
        await admin.close()


def ensure_topics(bootstrap: str, settings: Settings) -> list[str]:
    """Synchronous wrapper of :func:`ensure_topics_async`."""
    import asyncio

    return asyncio.run(ensure_topics_async(bootstrap, settings))


async def read_records(
    bootstrap: str,
    topic: str,
    *,
    idle_polls: int = 3,
    poll_ms: int = 500,
    timeout_s: float | None = None,
    done: Callable[[], bool] | None = None,
    **consumer_options: Any,
) -> AsyncIterator[Any]:
    """Every record of ``topic`` from the beginning (no consumer group, nothing committed), until
    ``idle_polls`` polls in a row return nothing, ``timeout_s`` passes, or ``done()`` is true.
    With ``done`` given, empty polls do not stop the reading (records may still be on the way)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        **consumer_options,
    )
    await consumer.start()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        idle = 0
        while deadline is None or time.monotonic() < deadline:
            if done is not None and done():
                return
            if done is None and idle >= idle_polls:
                return
            batch = await consumer.getmany(timeout_ms=poll_ms, max_records=5000)
            idle = 0 if batch else idle + 1
            for records in batch.values():
                for record in records:
                    yield record
    finally:
        await consumer.stop()
