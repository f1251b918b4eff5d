"""The telephony gateway on real Apache Kafka with a real WebSocket client: a sample call played
as Twilio Media Streams arrives as one stereo 8 kHz call with the exact audio; the generic
/stream endpoint checks its token, resumes a dropped call, and closes a malformed session with a
reason that also goes to the dead-letter topic."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import numpy as np
import pytest
from callsense.ingest.g711 import MULAW_TO_PCM16, mulaw_decode, mulaw_encode
from callsense.ingest.gateway import TrackAligner, twilio_signature
from callsense.ingest.gateway_cli import replay, stream_frames, twilio_frames
from callsense.processors.events import AUDIO_TOPIC, DEADLETTER_TOPIC
from support.gateway import gateway
from support.streaming import read_topic


def test_mulaw_round_trip_is_exact_on_codes_and_close_on_samples() -> None:
    codes = np.arange(256, dtype=np.uint8).tobytes()
    decoded = mulaw_decode(codes)
    assert np.array_equal(mulaw_decode(mulaw_encode(decoded)), decoded)
    assert MULAW_TO_PCM16[0xFF] == 0 and MULAW_TO_PCM16[0x80] == 32124  # G.711 table ends
    ramp = np.linspace(-32000, 32000, 4001).astype(np.int16)
    err = np.abs(mulaw_decode(mulaw_encode(ramp)).astype(int) - ramp)
    assert (err <= np.maximum(16, np.abs(ramp.astype(int)) // 16)).all()  # within one step


def test_tracks_align_by_timestamp_and_gaps_are_counted() -> None:
    a = TrackAligner()
    one = np.ones(160, np.int16)
    assert a.add(0, 0, one).shape == (2, 0)  # the other track has not reached it yet
    out = a.add(1, 0, 2 * one)
    assert out.shape == (2, 160) and (out[0] == 1).all() and (out[1] == 2).all()
    a.add(0, 40, one)  # 20 ms missing on channel 0: silence
    out = a.add(1, 20, 2 * one)
    assert out.shape == (2, 160) and (out[0] == 0).all() and a.filled[0] == 160
    tail = a.flush()
    assert tail.shape == (2, 160) and (tail[0] == 1).all() and (tail[1] == 0).all()


def test_twilio_signature_matches_twilios_documented_example() -> None:
    # the worked example of Twilio's request-validation docs (auth token 12345)
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309", "Digits": "1234",
              "From": "+14158675309", "To": "+18005551212"}  # fmt: skip
    assert twilio_signature("12345", url, params) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert twilio_signature("12345", url + "&x=1", params) != "RSOYDt4T1cUTdK1PDd93/VVr8B8="


def _events(bootstrap: str, call_id: str, topic: str = AUDIO_TOPIC) -> list[dict[str, Any]]:
    return [e for e in read_topic(bootstrap, topic) if e.get("call_id") == call_id]


def _audio(events: list[dict[str, Any]]) -> np.ndarray:
    chunks = [e for e in events if e["kind"] == "chunk"]
    assert [c["seq"] for c in chunks] == list(range(len(chunks)))
    parts = []
    for c in chunks:
        raw = np.frombuffer(base64.b64decode(c["pcm"]), dtype="<i2")
        parts.append(raw.reshape(-1, c["channels"]).T)
    return np.concatenate(parts, axis=1)


def test_a_call_played_as_twilio_media_streams_arrives_exact(kafka: Any) -> None:
    from callsense.ingest.producer import load_call_audio
    from callsense.ingest.samples import sample_calls
    from callsense.models.audio import resample
    from callsense.processors.stages import to_pcm16

    sample = sample_calls()[0]
    audio, sr = load_call_audio(sample["path"])
    audio = audio[:, : 10 * sr]  # 10 s
    ach = sample["agent_channel"]
    params = {"call_id": "tw-1", "agent_id": "a-7", "customer_id": "c-42", "queue": "billing"}
    with gateway(kafka.bootstrap) as base:
        frames = twilio_frames(audio, sr, "CA" + "1" * 32, params, ach)
        asyncio.run(replay(frames, base + "/twilio", None, {}))
    events = _events(kafka.bootstrap, "tw-1")
    start, end = events[0], events[-1]
    assert start["kind"] == "call_start" and end["kind"] == "call_end"
    assert (start["sample_rate"], start["channels"], start["agent_channel"]) == (8000, 2, 0)
    assert (start["agent_id"], start["customer_id"], start["queue"]) == ("a-7", "c-42", "billing")
    got = _audio(events)
    assert end["last_seq"] == len(events) - 3 and end["total_samples"] == got.shape[1]
    # what Twilio would have carried: each channel at 8 kHz through G.711 mu-law
    want = [mulaw_decode(mulaw_encode(to_pcm16(resample(ch, sr, 8000)))) for ch in audio]
    agent, customer = want[ach], want[1 - ach]
    assert got.shape[1] == len(agent) == 80_000
    assert np.array_equal(got[0], agent) and np.array_equal(got[1], customer)


def test_stream_endpoint_token_resume_and_malformed_input(kafka: Any) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosedError, InvalidStatus

    sr = 16000
    tone = (0.2 * np.sin(np.arange(2 * sr) * 2 * np.pi * 440 / sr)).astype(np.float32)
    stereo = np.stack([tone, tone[::-1]])
    auth = {"Authorization": "Bearer s3cret"}
    with gateway(kafka.bootstrap, gateway_token="s3cret") as base:
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(replay(stream_frames(stereo, sr, "x", {}), base + "/stream", None, {}))
        assert refused.value.response.status_code == 401

        # first second, then the socket drops without stop; a reconnect resumes the call
        frames = stream_frames(stereo, sr, "res-1", {"queue": "q"})
        start, body, stop = frames[0], frames[1:-1], frames[-1]
        half = len(body) // 2
        asyncio.run(replay([start, *body[:half]], base + "/stream", None, auth))
        asyncio.run(replay([start, *body[half:], stop], base + "/stream", None, auth))

        async def malformed() -> tuple[int, str]:
            async with connect(base + "/stream", additional_headers=auth) as ws:
                await ws.send(json.dumps({"type": "start", "call_id": "bad-1",
                                          "sample_rate": sr, "channels": 2}))  # fmt: skip
                await ws.send(b"\x00\x01\x02")  # not whole stereo int16 frames
                try:
                    await ws.recv()
                except ConnectionClosedError as exc:
                    assert exc.rcvd is not None
                    return exc.rcvd.code, exc.rcvd.reason
            return 0, ""

        code, reason = asyncio.run(malformed())
    assert code == 1003 and "int16 frames" in reason

    events = _events(kafka.bootstrap, "res-1")
    assert [e["kind"] for e in events].count("call_start") == 1  # resumed, not restarted
    assert events[-1]["kind"] == "call_end"
    got = _audio(events)
    assert got.shape == (2, 2 * sr)
    assert np.array_equal(got, np.stack([to16(tone), to16(tone[::-1])]))
    dead = _events(kafka.bootstrap, "bad-1", DEADLETTER_TOPIC)
    assert len(dead) == 1 and "int16 frames" in dead[0]["reason"]
    assert dead[0]["stage"] == "gateway"


def to16(x: np.ndarray) -> np.ndarray:
    from callsense.processors.stages import to_pcm16

    return to_pcm16(x)
