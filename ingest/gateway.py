"""Live calls in: a WebSocket media gateway that turns each telephony session into a callsense
call on Kafka (``call_start``, 250 ms PCM16 chunks, ``call_end``), as ``callsense ingest`` does
for files.

Endpoints (``callsense gateway [--host H] [--port P]``):

* ``/twilio`` - Twilio Media Streams as Twilio sends them: text frames ``connected``,
  ``start`` (``callSid``, ``tracks``, ``customParameters``, ``mediaFormat`` audio/x-mulaw 8 kHz),
  ``media`` (``track`` inbound|outbound, ``timestamp`` ms, base64 ``payload`` of 20 ms),
  ``dtmf``, ``mark``, ``stop``. The call is always stereo at 8 kHz: channel 0 is the agent
  (the ``outbound`` track), channel 1 the customer (``inbound``); a track that sends nothing
  stays silent. Tracks are aligned by ``timestamp``; gaps are filled with silence and counted.
  The call id is the ``call_id`` custom parameter, else the ``callSid``; ``agent_id``,
  ``customer_id`` and ``queue`` come from custom parameters. With ``CALLSENSE_TWILIO_AUTH_TOKEN``
  set, the handshake's ``X-Twilio-Signature`` (HMAC-SHA1 of the stream URL) is verified.
* ``/stream`` - a small generic protocol: a JSON text frame ``{"type": "start", "call_id",
  "sample_rate", "channels", "encoding": "pcm16"|"mulaw", "agent_channel", "agent_id",
  "customer_id", "queue"}``, binary frames of interleaved little-endian PCM16 (or mu-law bytes),
  and ``{"type": "stop"}``. With ``CALLSENSE_GATEWAY_TOKEN`` set the handshake needs
  ``Authorization: Bearer <token>``.

Backpressure: a session's frames are handled one at a time and each chunk waits for the Kafka
producer, so a slow broker pauses reading from that socket (the WebSocket library's bounded
queue then the TCP window push back on the sender); memory per session stays bounded. A socket
that drops without ``stop`` ends nothing at once: a reconnect of the same call id within
``CALLSENSE_GATEWAY_RESUME_S`` resumes the call (same sequence numbers and call time); after
that the worker ends it as ``abandoned`` once it has had no audio for
``CALLSENSE_CALL_IDLE_TIMEOUT_S``. Malformed input closes only its socket (close code 1008 or
1003 with the reason) and goes to the dead-letter topic with that reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import numpy as np
from callsense.ingest import audiohook
from callsense.models.g711 import mulaw_decode
from callsense.processors.events import (
    AUDIO_TOPIC,
    DEADLETTER_TOPIC,
    MAX_CHANNELS,
    AudioChunk,
    CallEnd,
    CallStart,
    deadletter_event,
    dumps,
)

if TYPE_CHECKING:
    from callsense.settings import Settings

log = logging.getLogger("callsense.gateway")

TWILIO_RATE = 8000
AGENT_CH, CUSTOMER_CH = 0, 1
MAX_TRACK_LAG_S = 1.0  # a track this far behind the other is filled with silence
RESUME_WAIT_S = 10.0  # a reconnect waits this long for the dropped session to let go
STAGE = "gateway"
ENDPOINTS = ("/twilio", "/audiohook", "/stream")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ProtocolError(ValueError):
    """Input that breaks the protocol: the socket is closed with ``code`` and the reason."""

    def __init__(self, reason: str, code: int = 1008) -> None:
        super().__init__(reason)
        self.reason, self.code = reason, code


# --------------------------------------------------------------------------- one call on Kafka


@dataclass
class CallPublisher:
    """One live call on ``callsense.audio``: stereo or mono int16 audio in, fixed-size chunks
    out in order; every send waits for the broker (backpressure)."""

    producer: Any
    start: CallStart
    chunk_ms: int = 250
    codec: str = "pcm16"  # on the wire: mu-law for audio that arrived as mu-law (lossless)
    seq: int = 0
    sent_samples: int = 0
    buffer: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.int16))
    ended: bool = False
    dropped_at: float | None = None  # monotonic time the socket dropped (resume window)
    # held by the session streaming this call; a reconnect waits for the old session to end
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def chunk_samples(self) -> int:
        return max(1, self.start.sample_rate * self.chunk_ms // 1000)

    async def begin(self) -> None:
        self.buffer = np.zeros((self.start.channels, 0), np.int16)
        await self._send(self.start.encode())

    async def push(self, pcm: np.ndarray) -> None:
        """(channels, n) int16 in call order; full chunks go out at once."""
        self.buffer = np.concatenate([self.buffer, pcm], axis=1)
        n = self.chunk_samples
        while self.buffer.shape[1] >= n:
            await self._chunk(self.buffer[:, :n])
            self.buffer = self.buffer[:, n:]

    async def end(self) -> None:
        if self.ended:
            return
        if self.buffer.shape[1]:
            await self._chunk(self.buffer)
            self.buffer = self.buffer[:, :0]
        end = CallEnd(self.start.call_id, self.seq - 1, self.sent_samples)
        await self._send(end.encode())
        self.ended = True

    async def _chunk(self, pcm: np.ndarray) -> None:
        ev = AudioChunk.from_array(
            self.start.call_id, self.seq, self.sent_samples, self.start.sample_rate, pcm,
            codec=self.codec,
        )  # fmt: skip
        await self._send(ev.encode())
        self.seq += 1
        self.sent_samples += pcm.shape[1]

    async def _send(self, value: bytes) -> None:
        await (await self.producer.send(AUDIO_TOPIC, value, key=self.start.call_id.encode()))


# --------------------------------------------------------------------------- Twilio tracks


@dataclass
class TrackAligner:
    """Two 8 kHz tracks placed by their ``timestamp`` (ms) into one stereo stream: emits the
    stretch both tracks have covered, or, when one lags by more than ``MAX_TRACK_LAG_S``, fills
    it with silence. Counts the silence filled in per channel."""

    rate: int = TWILIO_RATE
    emitted: int = 0  # samples of stereo output so far
    tracks: dict[int, np.ndarray] = field(default_factory=dict)  # channel -> pending samples
    ends: dict[int, int] = field(default_factory=lambda: {AGENT_CH: 0, CUSTOMER_CH: 0})
    filled: dict[int, int] = field(default_factory=lambda: {AGENT_CH: 0, CUSTOMER_CH: 0})

    def add(self, channel: int, timestamp_ms: int, samples: np.ndarray) -> np.ndarray:
        start = max(int(timestamp_ms) * self.rate // 1000, 0)
        pending = self.tracks.get(channel, np.zeros(0, np.int16))
        end = self.ends[channel]
        if start > end:  # a gap in this track: silence, counted
            gap = start - end
            pending = np.concatenate([pending, np.zeros(gap, np.int16)])
            self.filled[channel] += gap
        elif start < end:  # overlap (a repeated frame): keep what is new
            samples = samples[end - start :]
        self.tracks[channel] = np.concatenate([pending, samples])
        self.ends[channel] = max(end, start) + len(samples)
        return self._ready(force=False)

    def flush(self) -> np.ndarray:
        return self._ready(force=True)

    def _ready(self, force: bool) -> np.ndarray:
        lo, hi = min(self.ends.values()), max(self.ends.values())
        upto = hi if force or hi - lo > MAX_TRACK_LAG_S * self.rate else lo
        n = upto - self.emitted
        if n <= 0:
            return np.zeros((2, 0), np.int16)
        out = np.zeros((2, n), np.int16)
        for ch in (AGENT_CH, CUSTOMER_CH):
            pending = self.tracks.get(ch, np.zeros(0, np.int16))
            take = pending[:n]
            out[ch, : len(take)] = take
            if len(take) < n:  # this track lags: silence, counted
                self.filled[ch] += n - len(take)
                self.ends[ch] = max(self.ends[ch], upto)
            self.tracks[ch] = pending[n:]
        self.emitted = upto
        return out


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL followed by the sorted POST
    parameters (none for a Media Streams WebSocket)."""
    data = url + "".join(f"{k}{v}" for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def mint_ticket(token: str, call_id: str, ttl_s: float = 120.0, now: float | None = None) -> str:
    """A short-lived ``/stream`` credential for one call id, for clients that cannot send an
    Authorization header (a browser's WebSocket): ``<call id>.<expiry>.<HMAC-SHA256>``, keyed
    with the gateway token, which itself never leaves the server."""
    expires = str(int((time.time() if now is None else now) + ttl_s))
    return f"{call_id}.{expires}.{_ticket_mac(token, call_id, expires)}"


def _ticket_mac(token: str, call_id: str, expires: str) -> str:
    return hmac.new(token.encode(), f"{call_id}.{expires}".encode(), hashlib.sha256).hexdigest()


def check_ticket(token: str, ticket: str, now: float | None = None) -> str | None:
    """The call id a valid, unexpired ticket is for, else None."""
    parts = ticket.rsplit(".", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    call_id, expires, mac = parts
    if not hmac.compare_digest(mac.encode(), _ticket_mac(token, call_id, expires).encode()):
        return None
    return call_id if int(expires) >= (time.time() if now is None else now) else None


# --------------------------------------------------------------------------- the server


class Gateway:
    """The WebSocket server; one :class:`CallPublisher` per live call id."""

    def __init__(self, settings: Settings, producer: Any, require_auth: bool = False) -> None:
        self.settings = settings
        self.producer = producer
        self.calls: dict[str, CallPublisher] = {}
        self._sessions: dict[int, CallPublisher] = {}  # socket -> the call it holds
        self._last_frame: dict[int, Any] = {}  # socket -> its newest frame (for dead letters)
        self.resume_s = float(settings.gateway_resume_s)
        token = settings.gateway_token
        self.token = token.get_secret_value() if token else None
        twilio = settings.twilio_auth_token
        self.twilio_token = twilio.get_secret_value() if twilio else None
        self.public_url = settings.gateway_public_url.rstrip("/")
        key, secret = settings.audiohook_api_key, settings.audiohook_client_secret
        self.audiohook_key = key.get_secret_value() if key else None
        self.audiohook_secret = secret.get_secret_value() if secret else None
        self.idle_s = float(settings.gateway_idle_s)
        # beyond loopback an endpoint without its credential configured refuses every client
        self.require_auth = require_auth

    # -- handshake ---------------------------------------------------------------------------
    def check_request(self, path: str, headers: Any, host: str) -> tuple[int, str] | None:
        """(HTTP status, reason) to refuse the handshake, or None to accept it."""
        route = path.split("?", 1)[0]
        if route not in ENDPOINTS:
            return 404, f"no endpoint {route} (use {', '.join(ENDPOINTS)})"
        secret = {"/stream": self.token, "/twilio": self.twilio_token,
                  "/audiohook": self.audiohook_key}[route]  # fmt: skip
        if secret is None and self.require_auth:
            return 403, f"{route} has no credential configured on this gateway"
        if route == "/stream" and self.token:
            ticket = parse_qs(path.partition("?")[2]).get("ticket", [""])[0]
            if not self._bearer_ok(headers) and not (ticket and check_ticket(self.token, ticket)):
                return 401, "missing or wrong bearer token (or ticket)"
        if route == "/twilio" and self.twilio_token:
            base = self.public_url or f"wss://{host}"
            expected = twilio_signature(self.twilio_token, base + path)
            given = headers.get("X-Twilio-Signature") or ""
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return 403, "X-Twilio-Signature does not match"
        if route == "/audiohook":
            return self._check_audiohook(path, headers, host)
        return None

    def _bearer_ok(self, headers: Any) -> bool:
        scheme, _, given = (headers.get("Authorization") or "").partition(" ")
        token = self.token or ""
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())

    def _check_audiohook(self, path: str, headers: Any, host: str) -> tuple[int, str] | None:
        for name in ("Audiohook-Session-Id", "Audiohook-Organization-Id",
                     "Audiohook-Correlation-Id"):  # fmt: skip
            if not audiohook.is_uuid(headers.get(name)):
                return 400, f"{name} must be a UUID"
        if self.audiohook_key:
            given = headers.get("X-API-KEY") or ""
            if not hmac.compare_digest(given.encode(), self.audiohook_key.encode()):
                return 401, "missing or wrong X-API-KEY"
        if self.audiohook_key and self.audiohook_secret:
            authority = self.public_url.split("://", 1)[-1] if self.public_url else host
            why = audiohook.verify_signature(path, authority, headers, self.audiohook_key,
                                             self.audiohook_secret)  # fmt: skip
            if why is not None:
                return 401, why
        return None

    # -- sessions ----------------------------------------------------------------------------
    async def session(self, ws: Any, path: str) -> None:
        route = path.split("?", 1)[0]
        try:
            if route == "/twilio":
                await self._twilio(ws)
            elif route == "/audiohook":
                await self._audiohook(ws)
            else:
                await self._stream(ws)
        except ProtocolError as exc:
            log.warning("gateway %s: %s", route, exc.reason)
            holder = self._sessions.get(id(ws))
            cid = holder.start.call_id if holder else None
            await self._deadletter(exc.reason, self._last_frame.get(id(ws)), cid)
            await ws.close(exc.code, exc.reason[:120])
        except Exception as exc:  # noqa: BLE001 - a dropped socket and the like
            if type(exc).__name__.startswith("ConnectionClosed"):
                log.info("gateway %s: socket closed without stop", route)
            else:
                raise
        finally:
            self._last_frame.pop(id(ws), None)
            mine = self._sessions.pop(id(ws), None)
            if mine is not None:
                if not mine.ended:
                    mine.dropped_at = time.monotonic()  # resumable for resume_s
                mine.lock.release()
            self._forget_expired()

    async def _frames(self, ws: Any) -> Any:
        """The socket's frames; a socket silent for ``idle_s`` is a protocol error (its call is
        left to resume or to end as abandoned)."""
        while True:
            try:
                frame = await asyncio.wait_for(ws.recv(), self.idle_s)
            except TimeoutError:
                raise ProtocolError(f"no frame for {self.idle_s:g} s") from None
            except Exception as exc:  # noqa: BLE001 - a normal close ends the frames
                if type(exc).__name__ == "ConnectionClosedOK":
                    return
                raise
            self._last_frame[id(ws)] = frame
            yield frame

    def _forget_expired(self) -> None:
        now = time.monotonic()
        for cid, c in list(self.calls.items()):
            if c.ended or (c.dropped_at is not None and now - c.dropped_at > self.resume_s):
                del self.calls[cid]

    async def _open(self, ws: Any, start: CallStart, codec: str) -> CallPublisher:
        """A new call, or the resumption of one whose socket dropped (waiting a little for the
        old session to notice the drop)."""
        known = self.calls.get(start.call_id)
        if known is not None and not known.ended:
            try:
                await asyncio.wait_for(known.lock.acquire(), RESUME_WAIT_S)
            except TimeoutError:
                raise ProtocolError(f"call {start.call_id!r} is already streaming") from None
            self._sessions[id(ws)] = known
            if (known.start.sample_rate, known.start.channels) != (start.sample_rate,
                                                                   start.channels):
                raise ProtocolError("a resumed call must keep its sample rate and channels")
            known.dropped_at = None
            log.info("gateway: call %s resumed at chunk %d", start.call_id, known.seq)
            return known
        call = CallPublisher(self.producer, start, chunk_ms=self.settings.chunk_ms, codec=codec)
        await call.lock.acquire()
        self.calls[start.call_id] = call
        self._sessions[id(ws)] = call
        await call.begin()
        return call

    async def _deadletter(self, reason: str, raw: Any, call_id: str | None) -> None:
        original = raw if isinstance(raw, str | bytes) else ""
        ev = deadletter_event(STAGE, reason, original[:4096], call_id=call_id)
        try:
            await (await self.producer.send(DEADLETTER_TOPIC, dumps(ev),
                                            key=(call_id or "").encode() or None))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the close reason still tells the client
            log.warning("dead letter not sent: %s", exc)

    # -- /twilio -----------------------------------------------------------------------------
    async def _twilio(self, ws: Any) -> CallPublisher | None:
        call: CallPublisher | None = None
        aligner = TrackAligner()
        tracks = {"outbound": AGENT_CH, "inbound": CUSTOMER_CH}
        async for frame in self._frames(ws):
            msg = _json(frame)
            event = msg.get("event")
            if event in ("connected", "mark", "dtmf"):
                continue
            if event == "start":
                if call is not None:
                    raise ProtocolError("a second start on one stream")
                call = await self._open(ws, _twilio_start(msg), "mulaw")
            elif event == "media":
                if call is None:
                    raise ProtocolError("media before start")
                media = msg.get("media") or {}
                track = media.get("track", "inbound")
                if track not in tracks:
                    raise ProtocolError(f"unknown track {track!r}")
                try:
                    ts = int(media.get("timestamp", 0))
                    payload = base64.b64decode(media.get("payload", ""), validate=True)
                except (ValueError, TypeError, binascii.Error) as exc:
                    raise ProtocolError(f"bad media frame: {exc}") from exc
                if not 0 <= ts <= 86_400_000:
                    raise ProtocolError(f"media timestamp {ts} out of range")
                ready = aligner.add(tracks[track], ts, mulaw_decode(payload))
                if ready.shape[1]:
                    await call.push(ready)
            elif event == "stop":
                if call is not None:
                    await call.push(aligner.flush())
                    await call.end()
                    if any(aligner.filled.values()):
                        log.info("call %s: silence filled in per channel %s",
                                 call.start.call_id, aligner.filled)  # fmt: skip
                return call
            else:
                raise ProtocolError(f"unknown Twilio event {event!r}")
        if call is not None:  # dropped: what arrived is sent, the rest may come on a resume
            await call.push(aligner.flush())
        return call

    # -- /audiohook --------------------------------------------------------------------------
    async def _audiohook(self, ws: Any) -> CallPublisher | None:
        headers = ws.request.headers
        proto = audiohook.AudioHookSession(headers["Audiohook-Session-Id"],
                                           headers.get("Audiohook-Organization-Id"))  # fmt: skip
        call: CallPublisher | None = None
        try:
            async for frame in self._frames(ws):
                if isinstance(frame, bytes):
                    pcm = proto.on_audio(frame)
                else:
                    replies, pcm = proto.on_text(_json(frame))
                    if proto.opened is not None and call is None and not proto.opened.probe:
                        codec = "mulaw" if proto.opened.fmt == "PCMU" else "pcm16"
                        call = await self._open(ws, _audiohook_start(proto.opened), codec)
                    for r in replies:
                        await ws.send(json.dumps(r))
                if call is not None and pcm is not None and pcm.shape[1]:
                    await call.push(pcm)
                if proto.state == "closed":
                    if call is not None:
                        await call.end()
                    if proto.filled:
                        log.info("call %s: %d samples of paused/discarded audio filled",
                                 call.start.call_id if call else "-", proto.filled)  # fmt: skip
                    return call
        except (audiohook.AudioHookError, ProtocolError) as exc:
            reason = exc.reason if isinstance(exc, ProtocolError) else str(exc)
            if proto.state != "closed":  # tell the client why, if it still listens
                with contextlib.suppress(Exception):
                    await ws.send(json.dumps(proto.disconnect(reason)))
            raise exc if isinstance(exc, ProtocolError) else ProtocolError(reason) from exc
        return call

    # -- /stream -----------------------------------------------------------------------------
    def _ticket_call(self, ws: Any) -> str | None:
        """The call id a ticket-admitted socket may stream (None: admitted by bearer/open)."""
        req = ws.request
        if not self.token or self._bearer_ok(req.headers):
            return None
        ticket = parse_qs(req.path.partition("?")[2]).get("ticket", [""])[0]
        return check_ticket(self.token, ticket) or ""

    async def _stream(self, ws: Any) -> CallPublisher | None:
        call: CallPublisher | None = None
        encoding = "pcm16"
        async for frame in self._frames(ws):
            if isinstance(frame, bytes):
                if call is None:
                    raise ProtocolError("audio before start")
                if encoding == "mulaw":
                    pcm = mulaw_decode(frame)
                else:
                    if len(frame) % (2 * call.start.channels):
                        raise ProtocolError(
                            f"{len(frame)} bytes is not a whole number of "
                            f"{call.start.channels}-channel int16 frames", 1003
                        )
                    pcm = np.frombuffer(frame, dtype="<i2")
                if len(pcm) % call.start.channels:
                    raise ProtocolError("mu-law frame is not whole frames of every channel", 1003)
                await call.push(pcm.reshape(-1, call.start.channels).T.astype(np.int16))
                continue
            msg = _json(frame)
            kind = msg.get("type")
            if kind == "start":
                if call is not None:
                    raise ProtocolError("a second start on one stream")
                start, encoding = _generic_start(msg)
                bound = self._ticket_call(ws)
                if bound is not None and start.call_id != bound:
                    raise ProtocolError("the ticket is for another call id")
                call = await self._open(ws, start, encoding)
            elif kind == "stop":
                if call is not None:
                    await call.end()
                return call
            else:
                raise ProtocolError(f"unknown message type {kind!r}")
        return call


def _json(frame: Any) -> dict[str, Any]:
    if isinstance(frame, bytes):
        raise ProtocolError("expected a JSON text frame, got binary", 1003)
    try:
        msg = json.loads(frame)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"frame is not JSON ({exc})", 1003) from exc
    if not isinstance(msg, dict):
        raise ProtocolError("frame is not a JSON object", 1003)
    return msg


def _meta(params: dict[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str | int) or len(str(value)) > 128:
        raise ProtocolError(f"{name} must be a string of at most 128 characters")
    return str(value)


def _call_id(value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        raise ProtocolError("call id must be 1-128 characters")
    return value


def _twilio_start(msg: dict[str, Any]) -> CallStart:
    start = msg.get("start") or {}
    fmt = start.get("mediaFormat") or {}
    if fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw" or int(
        fmt.get("sampleRate", TWILIO_RATE)
    ) != TWILIO_RATE:
        raise ProtocolError(f"unsupported media format {fmt} (audio/x-mulaw 8000 Hz)")
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("customParameters must be an object")
    call_id = _call_id(params.get("call_id") or start.get("callSid") or msg.get("streamSid"))
    return CallStart(
        call_id, TWILIO_RATE, 2, AGENT_CH, _meta(params, "agent_id"),
        _meta(params, "customer_id"), _meta(params, "queue"), source="twilio",
    )  # fmt: skip


def _audiohook_start(opened: audiohook.Opened) -> CallStart:
    return CallStart(
        opened.call_id, audiohook.RATE, 2, AGENT_CH, None, opened.customer_id, opened.queue,
        source="audiohook",
    )  # fmt: skip


def _generic_start(msg: dict[str, Any]) -> tuple[CallStart, str]:
    try:
        rate, channels = int(msg["sample_rate"]), int(msg.get("channels", 1))
        agent_channel = int(msg.get("agent_channel", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError(f"bad start: {exc!r}") from exc
    encoding = msg.get("encoding", "pcm16")
    if encoding not in ("pcm16", "mulaw"):
        raise ProtocolError(f"encoding {encoding!r} (pcm16 or mulaw)")
    ok = 1 <= channels <= MAX_CHANNELS and 8000 <= rate <= 48000 and agent_channel in (0, 1)
    if not ok:
        raise ProtocolError("channels 1-2, sample_rate 8000-48000 Hz, agent_channel 0 or 1")
    start = CallStart(
        _call_id(msg.get("call_id")), rate, channels, agent_channel,
        _meta(msg, "agent_id"), _meta(msg, "customer_id"), _meta(msg, "queue"), source="stream",
    )  # fmt: skip
    return start, encoding


async def serve(
    settings: Settings, host: str, port: int, ready: Any = None, require_auth: bool | None = None
) -> None:
    """Run the gateway until cancelled; ``ready`` (an asyncio.Event) is set once listening."""
    from callsense.ingest.producer import make_producer
    from callsense.processors.events import ensure_topics_async
    from websockets.asyncio.server import serve as ws_serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    await ensure_topics_async(settings.kafka_bootstrap, settings)
    producer = await make_producer(settings.kafka_bootstrap)
    if require_auth is None:
        require_auth = host not in LOOPBACK
    gw = Gateway(settings, producer, require_auth)

    def process_request(connection: Any, request: Any) -> Any:
        host_header = request.headers.get("Host", f"{host}:{port}")
        refusal = gw.check_request(request.path, request.headers, host_header)
        if refusal is None:
            return None
        status, reason = refusal
        body = (reason + "\n").encode()
        headers = Headers([("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return Response(status, reason, headers, body)

    async def handler(ws: Any) -> None:
        await gw.session(ws, ws.request.path)

    try:
        async with ws_serve(handler, host, port, process_request=process_request,
                            max_size=1 << 20, max_queue=32) as server:  # fmt: skip
            log.info("gateway listening on ws://%s:%d (%s)", host, port, ", ".join(ENDPOINTS))
            if ready is not None:
                ready.set()
            await server.serve_forever()
    finally:
        await producer.stop()
