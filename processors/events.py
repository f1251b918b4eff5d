"""Every event on every callsense topic: names, JSON schemas, encoding and validation.

All topics are keyed by call id (UTF-8), so every event of one call lands in one partition and is
read in order, and the per-call state lives with the partition that owns the call. Values are
JSON objects with a ``kind`` field. Plain dataclasses (no Faust import) so ingest, tests and
other tools can produce and parse events with nothing but a Kafka client.

Topics (created by :func:`ensure_topics` with ``settings.topic_partitions`` partitions):

``callsense.audio``      ingest -> processor: ``call_start``, ``chunk``, ``call_end``. Control
                         events travel with the audio so that the partition orders them: a
                         chunk can never overtake its call's start or end.
``callsense.windows``    processor -> persistence, alerts: ``call_started``, ``window``,
                         ``call_ended`` (in call order; consumers that only want windows keep
                         ``kind == "window"``).
``callsense.summaries``  persistence -> anyone: ``summary`` once it is stored.
``callsense.deadletter`` any stage: ``deadletter`` with the original payload, reason, stage.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from callsense.settings import Settings

AUDIO_TOPIC = "callsense.audio"
WINDOWS_TOPIC = "callsense.windows"
SUMMARIES_TOPIC = "callsense.summaries"
DEADLETTER_TOPIC = "callsense.deadletter"
ALL_TOPICS = (AUDIO_TOPIC, WINDOWS_TOPIC, SUMMARIES_TOPIC, DEADLETTER_TOPIC)
#: topics that carry raw audio get ``retention.ms = settings.audio_retention_ms``
AUDIO_TOPICS = (AUDIO_TOPIC,)

MAX_CHANNELS = 2
MAX_SAMPLE_RATE = 192_000


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

    def to_json(self) -> bytes:
        return _dumps(asdict(self))


@dataclass
class AudioChunk:
    """``pcm``: base64 of little-endian int16 samples, interleaved when stereo."""

    call_id: str
    seq: int
    start_sample: int
    sample_rate: int
    channels: int
    pcm: str
    ts: float = field(default_factory=now)
    kind: str = "chunk"

    @classmethod
    def from_array(
        cls, call_id: str, seq: int, start_sample: int, sample_rate: int, chunk: np.ndarray
    ) -> AudioChunk:
        """``chunk``: (channels, samples) float in [-1, 1]."""
        chunk = np.atleast_2d(chunk)
        pcm = encode_pcm16(chunk)
        return cls(call_id, int(seq), int(start_sample), int(sample_rate), chunk.shape[0], pcm)

    def samples(self) -> np.ndarray:
        """Decode to (channels, samples) float32; :class:`BadEvent` if corrupt."""
        return decode_pcm16(self.pcm, self.channels, self.call_id)

    def to_json(self) -> bytes:
        return _dumps(asdict(self))


@dataclass
class CallEnd:
    call_id: str
    last_seq: int
    total_samples: int
    ts: float = field(default_factory=now)
    kind: str = "call_end"

    def to_json(self) -> bytes:
        return _dumps(asdict(self))


AudioEvent = CallStart | AudioChunk | CallEnd


def encode_pcm16(chunk: np.ndarray) -> str:
    """(C, T) float -> base64 of interleaved little-endian int16 (``stages.to_pcm16``: the one
    float/PCM16 convention, so the Kafka path is bit-identical to offline analysis)."""
    from callsense.processors.stages import to_pcm16

    pcm = to_pcm16(np.asarray(chunk, dtype=np.float32)).T.astype("<i2")
    return base64.b64encode(np.ascontiguousarray(pcm).tobytes()).decode("ascii")


def decode_pcm16(pcm: str, channels: int, call_id: str | None = None) -> np.ndarray:
    """base64 interleaved int16 -> (C, T) float32; raises :class:`BadEvent` when corrupt."""
    try:
        raw = base64.b64decode(pcm, validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadEvent(f"corrupt chunk: pcm is not valid base64 ({exc})", call_id) from exc
    frame = 2 * channels
    if not raw:
        raise BadEvent("corrupt chunk: empty pcm payload", call_id)
    if len(raw) % frame:
        raise BadEvent(
            f"corrupt chunk: {len(raw)} bytes is not a whole number of {channels}-channel "
            "int16 frames",
            call_id,
        )
    from callsense.processors.stages import from_pcm16

    ints = np.frombuffer(raw, dtype="<i2").reshape(-1, channels).T
    return np.ascontiguousarray(from_pcm16(ints))


def _req(d: dict[str, Any], name: str, typ: type | tuple[type, ...], call_id: str | None) -> Any:
    if name not in d:
        raise BadEvent(f"missing field {name!r}", call_id)
    value = d[name]
    if isinstance(value, bool) or not isinstance(value, typ):
        raise BadEvent(f"field {name!r} has wrong type {type(value).__name__}", call_id)
    return value


def _opt_str(d: dict[str, Any], name: str) -> str | None:
    value = d.get(name)
    return None if value is None else str(value)


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


def parse_audio_event(value: bytes | str | None, key: bytes | str | None = None) -> AudioEvent:
    """Validate one ``callsense.audio`` message; :class:`BadEvent` says why it is unusable."""
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
        channels = _req(d, "channels", int, call_id)
        rate = _req(d, "sample_rate", int, call_id)
        seq = _req(d, "seq", int, call_id)
        start = _req(d, "start_sample", int, call_id)
        if not 1 <= channels <= MAX_CHANNELS:
            raise BadEvent(f"chunk has {channels} channels (1 or 2 supported)", call_id)
        if not 1000 <= rate <= MAX_SAMPLE_RATE:
            raise BadEvent(f"chunk sample rate {rate} Hz out of range", call_id)
        if seq < 0 or start < 0:
            raise BadEvent("negative seq or start_sample", call_id)
        pcm = _req(d, "pcm", str, call_id)
        return AudioChunk(call_id, seq, start, rate, channels, pcm, float(d.get("ts", 0.0)))
    if kind == "call_start":
        channels = _req(d, "channels", int, call_id)
        rate = _req(d, "sample_rate", int, call_id)
        if not 1 <= channels <= MAX_CHANNELS:
            raise BadEvent(f"call has {channels} channels (1 or 2 supported)", call_id)
        if not 1000 <= rate <= MAX_SAMPLE_RATE:
            raise BadEvent(f"call sample rate {rate} Hz out of range", call_id)
        agent_channel = int(d.get("agent_channel", 0) or 0)
        if agent_channel not in (0, 1):
            raise BadEvent(f"agent_channel {agent_channel} must be 0 or 1", call_id)
        return CallStart(
            call_id,
            rate,
            channels,
            agent_channel,
            _opt_str(d, "agent_id"),
            _opt_str(d, "customer_id"),
            _opt_str(d, "queue"),
            _opt_str(d, "source"),
            float(d.get("ts", 0.0)),
        )
    if kind == "call_end":
        return CallEnd(
            call_id,
            int(d.get("last_seq", -1)),
            int(d.get("total_samples", 0)),
            float(d.get("ts", 0.0)),
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


def call_ended_event(
    call_id: str,
    duration_s: float,
    talk_time_s: dict[str, float],
    ts: float,
    speakers: list[tuple[str, str, int | None]] | None = None,
) -> dict[str, Any]:
    """``speakers``: every speaker of the call (a diarized mono call's call_started cannot
    list them up front: they are found as the call goes)."""
    d: dict[str, Any] = {
        "kind": "call_ended",
        "call_id": call_id,
        "duration_s": float(duration_s),
        "talk_time_s": {k: float(v) for k, v in talk_time_s.items()},
        "ts": ts,
    }
    if speakers is not None:
        d["speakers"] = [{"speaker": s, "role": r, "channel": c} for s, r, c in speakers]
    return d


def dumps(d: dict[str, Any]) -> bytes:
    return _dumps(d)


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
