"""The telephony gateway on real Apache Kafka with a real WebSocket client: a sample call played
as Twilio Media Streams arrives as one stereo 8 kHz call with the exact audio; the generic
/stream endpoint checks its token, resumes a dropped call, and closes a malformed session with a
reason that also goes to the dead-letter topic."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from typing import Any

import numpy as np
import pytest
from callsense.ingest.gateway import TrackAligner, twilio_signature
from callsense.ingest.gateway_cli import replay, stream_frames, twilio_frames
from callsense.models.g711 import MULAW_TO_PCM16, mulaw_decode, mulaw_encode
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
        parts.append(c["pcm16"])
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


# --------------------------------------------------------------------------- hostile clients

SR = 8000


def _twilio(event: str, **body: Any) -> str:
    return json.dumps({"event": event, "streamSid": "MZ1", **body})


def _twilio_start(call_id: str, **fmt: Any) -> str:
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt}
    return _twilio("start", start={"streamSid": "MZ1", "callSid": "CA" + call_id,
                                   "tracks": ["inbound"], "customParameters": {"call_id": call_id},
                                   "mediaFormat": media_format})  # fmt: skip


def _media(payload: str, track: str = "inbound", ts: int = 0) -> str:
    return _twilio("media", media={"track": track, "chunk": "1", "timestamp": str(ts),
                                   "payload": payload})  # fmt: skip


def _ah(kind: str, seq: int, sid: str, **params: Any) -> str:
    return json.dumps({"version": "2", "id": sid, "type": kind, "seq": seq, "serverseq": 0,
                       "position": "PT0S", "parameters": params})  # fmt: skip


def _ah_headers(sid: str, key: str = "k3y") -> dict[str, str]:
    return {"Audiohook-Organization-Id": "d7934305-0972-4844-938e-9060eef73d05",
            "Audiohook-Session-Id": sid, "Audiohook-Correlation-Id": str(uuid.uuid4()),
            "X-API-KEY": key}  # fmt: skip


def _ah_open(sid: str, conv: str) -> str:
    return _ah("open", 1, sid, organizationId="d7934305-0972-4844-938e-9060eef73d05",
               conversationId=conv, participant={"id": str(uuid.uuid4())},
               media=[{"type": "audio", "format": "PCMU", "channels": ["external", "internal"],
                       "rate": 8000}])  # fmt: skip


async def _hostile(url: str, headers: dict[str, str], frames: list[Any],
                   abort: bool = False) -> tuple[int | None, str, list[str]]:  # fmt: skip
    """Send ``frames``; return the server's close code and reason and the texts it sent."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    texts: list[str] = []
    async with connect(url, additional_headers=headers, max_size=1 << 21) as ws:
        try:
            for f in frames:
                await ws.send(f)
            if abort:
                ws.transport.abort()  # the TCP connection drops: no close frame
                return None, "aborted", texts
            while True:
                texts.append(await asyncio.wait_for(ws.recv(), 15))
        except ConnectionClosed as exc:
            return (exc.rcvd.code, exc.rcvd.reason, texts) if exc.rcvd else (None, "", texts)
    return None, "", texts


def test_malformed_input_closes_only_its_own_socket(kafka: Any) -> None:
    """Fourteen kinds of broken client each get their own socket closed with a reason (and a
    dead letter where the gateway read a frame); a well-behaved call streaming at real time
    meanwhile arrives exact."""
    good_audio = np.stack([np.sin(np.arange(4 * SR) / 9), np.cos(np.arange(4 * SR) / 7)])
    good_audio = (0.3 * good_audio).astype(np.float32)
    sid = [str(uuid.uuid4()) for _ in range(3)]
    conv = str(uuid.uuid4())
    mu = base64.b64encode(mulaw_encode(np.zeros(160, np.int16))).decode()
    start = json.dumps({"type": "start", "call_id": "h-second", "sample_rate": SR})
    cases: dict[str, tuple[str, dict[str, str], list[Any], Any, str]] = {
        # name: (endpoint, headers, frames, expected close code, reason fragment)
        "bad JSON": ("/stream", {}, ["{not json"], 1003, "not JSON"),
        "unknown message": ("/stream", {}, [json.dumps({"type": "dance"})], 1008, "unknown"),
        "second start": ("/stream", {}, [start, start], 1008, "second start"),
        "torn int16 frame": ("/stream", {}, [json.dumps({"type": "start", "call_id": "h-torn",
                             "sample_rate": SR, "channels": 2}), b"\x00\x01\x02"], 1003,
                             "int16 frames"),  # fmt: skip
        "oversize frame": ("/stream", {}, [json.dumps({"type": "start", "call_id": "h-big",
                           "sample_rate": SR}), b"\x00" * (1 << 20 + 1)], 1009, ""),  # fmt: skip
        "silence forever": ("/stream", {}, [json.dumps({"type": "start", "call_id": "h-idle",
                            "sample_rate": SR})], 1008, "no frame for 2 s"),  # fmt: skip
        "unknown Twilio event": ("/twilio", {}, [_twilio("dance")], 1008, "unknown Twilio"),
        "media before start": ("/twilio", {}, [_media(mu)], 1008, "media before start"),
        "bad base64": ("/twilio", {}, [_twilio_start("h-b64"), _media("@@@")], 1008,
                       "bad media frame"),  # fmt: skip
        "wrong media format": ("/twilio", {}, [_twilio_start("h-fmt", encoding="audio/x-l16",
                               sampleRate=16000)], 1008, "unsupported media format"),  # fmt: skip
        "unknown track": ("/twilio", {}, [_twilio_start("h-trk"), _media(mu, "sideways")],
                          1008, "unknown track"),  # fmt: skip
        "AudioHook audio before open": ("/audiohook", _ah_headers(sid[0]), [b"\xff" * 320],
                                        1008, "not active"),  # fmt: skip
        "AudioHook seq out of order": ("/audiohook", _ah_headers(sid[1]),
                                       [_ah_open(sid[1], conv), _ah("ping", 7, sid[1])], 1008,
                                       "out of order"),  # fmt: skip
        "binary frame on /twilio": ("/twilio", {}, [b"\x00\x01"], 1003, "binary"),
    }

    async def main(base: str) -> tuple[dict[str, Any], Any]:
        good = stream_frames(good_audio, SR, "h-good", {"queue": "q"})
        runs = [_hostile(base + ep, h, fr) for ep, h, fr, _c, _r in cases.values()]
        abrupt = _hostile(base + "/twilio", {}, [_twilio_start("h-abort"), _media(mu)], True)
        results = await asyncio.gather(replay(good, base + "/stream", 1.0, {}), abrupt, *runs)
        return dict(zip(cases, results[2:], strict=True)), results[1]

    with gateway(kafka.bootstrap, gateway_idle_s=2.0, audiohook_api_key="k3y") as base:
        got, aborted = asyncio.run(main(base))
        # the gateway still serves after all of that
        asyncio.run(replay(stream_frames(good_audio[:, :SR], SR, "h-after", {}),
                           base + "/stream", None, {}))  # fmt: skip
    assert len(cases) >= 10
    for name, (_ep, _h, _f, code, reason) in cases.items():
        got_code, got_reason, texts = got[name]
        assert got_code == code and reason in got_reason, (name, got_code, got_reason)
        if name.startswith("AudioHook") and "/audiohook" in cases[name][0]:
            assert json.loads(texts[-1])["type"] == "disconnect", name
            assert json.loads(texts[-1])["parameters"]["reason"] == "error", name
    assert aborted[1] == "aborted"

    events = _events(kafka.bootstrap, "h-good")
    assert events[0]["kind"] == "call_start" and events[-1]["kind"] == "call_end"
    assert np.array_equal(_audio(events), np.stack([to16(c) for c in good_audio]))
    assert _events(kafka.bootstrap, "h-after")[-1]["kind"] == "call_end"
    dead = read_topic(kafka.bootstrap, DEADLETTER_TOPIC)
    reasons = " | ".join(d["reason"] for d in dead)
    for fragment in ("not JSON", "second start", "int16 frames", "no frame for 2 s",
                     "unknown Twilio", "media before start", "bad media frame",
                     "unsupported media format", "unknown track", "not active",
                     "out of order"):  # fmt: skip
        assert fragment in reasons, fragment
    assert all(d["stage"] == "gateway" for d in dead)


def test_every_endpoint_enforces_its_credential(kafka: Any) -> None:
    from websockets.exceptions import InvalidStatus

    def status(base: str, path: str, headers: dict[str, str]) -> int:
        with pytest.raises(InvalidStatus) as refused:
            asyncio.run(_hostile(base + path, headers, []))
        return refused.value.response.status_code

    sid = str(uuid.uuid4())
    secrets = {"gateway_token": "t0k", "twilio_auth_token": "tw", "audiohook_api_key": "k3y"}
    with gateway(kafka.bootstrap, require_auth=True, **secrets) as base:
        assert status(base, "/stream", {"Authorization": "Bearer wrong"}) == 401
        assert status(base, "/stream", {}) == 401
        assert status(base, "/twilio", {"X-Twilio-Signature": "forged"}) == 403
        assert status(base, "/audiohook", _ah_headers(sid, key="wrong")) == 401
        assert status(base, "/audiohook", {"X-API-KEY": "k3y"}) == 400  # no session headers
        assert status(base, "/nowhere", {}) == 404
        # the right credentials open each endpoint
        port = base.rsplit(":", 1)[1]
        signature = twilio_signature("tw", f"wss://127.0.0.1:{port}/twilio")
        for path, headers in (("/stream", {"Authorization": "Bearer t0k"}),
                              ("/twilio", {"X-Twilio-Signature": signature}),
                              ("/audiohook", _ah_headers(sid))):  # fmt: skip
            code, _reason, _texts = asyncio.run(_hostile(base + path, headers, ["{"]))
            assert code == 1003, path  # admitted, then closed for the bad frame
    # beyond loopback, an endpoint whose credential is not configured refuses everyone
    with gateway(kafka.bootstrap, require_auth=True, gateway_token="t0k") as base:
        assert status(base, "/twilio", {}) == 403
        assert status(base, "/audiohook", _ah_headers(sid)) == 403
